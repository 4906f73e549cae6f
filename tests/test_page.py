"""``GET /`` serves the page, and the browser profile's header-block parsing (no browser needed)."""

from __future__ import annotations

import json
import re

import aiohttp
from conftest import run, running_server

from pushbench.transports import TRANSPORTS
from tools.browser_profile import (
    PROFILE_PATH,
    Exchange,
    build_profile,
    parse_header_block,
    split_requests,
    split_responses,
    templated,
)


def test_page_is_served_and_uses_all_four_endpoints() -> None:
    async def body() -> None:
        async with running_server() as srv, aiohttp.ClientSession() as session, session.get(srv.url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert resp.charset == "utf-8"
            html = await resp.text()
        for endpoint in ("/ws", "/sse", "/longpoll", "/poll"):
            assert endpoint in html, f"the page never mentions {endpoint}"
        for api in ("new WebSocket(", "new EventSource(", "fetch(", "window.pushbench"):
            assert api in html
        # One self-contained file: nothing loaded from elsewhere; chart colours and labels from the registry.
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
        slot = re.search(r'<script id="transport-styles" type="application/json">(.*?)</script>', html)
        assert slot is not None
        assert json.loads(slot.group(1)) == {
            t.name: {"label": t.label, "colour": t.colour} for t in TRANSPORTS.values()
        }

    run(body())


FETCH = b"GET /poll?after=4 HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nCookie: a=b\r\nReferer: http://127.0.0.1:4000/\r\n\r\n"
POLL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:4000\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02{}"
SSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nid: 1\r\n"


def test_header_block_bytes_are_start_line_through_blank_line() -> None:
    parsed = parse_header_block(FETCH)
    assert parsed is not None
    block, end = parsed
    assert block.start_line == "GET /poll?after=4 HTTP/1.1"
    assert block.raw == FETCH and end == len(FETCH) == len(block.raw)
    assert parse_header_block(FETCH[:-1]) is None  # the blank line has not arrived yet


def test_keepalive_connection_splits_into_exchanges() -> None:
    requests = split_requests(FETCH + FETCH.replace(b"after=4", b"after=5") + UPGRADE + b"\x81\x80....")
    assert [r.start_line.split()[1] for r in requests] == ["/poll?after=4", "/poll?after=5", "/ws"]
    responses = split_responses(POLL_RESPONSE + POLL_RESPONSE + SWITCH)
    assert [r.start_line for r in responses] == [
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 101 Switching Protocols",
    ]
    assert len(responses[0].raw) == len(POLL_RESPONSE) - 2


def test_profile_templates_host_and_origin_and_drops_cookie() -> None:
    fetch_req, ws_req = split_requests(FETCH)[0], split_requests(UPGRADE)[0]
    poll_resp, ws_resp, sse_resp = (split_responses(x)[0] for x in (POLL_RESPONSE, SWITCH, SSE))
    assert templated(fetch_req.headers, "127.0.0.1:4000") == [["Host", "{host}"], ["Referer", "{origin}/"]]
    exchanges = [
        Exchange(fetch_req, poll_resp),
        Exchange(ws_req, ws_resp),
        Exchange(split_requests(FETCH.replace(b"/poll?after=4", b"/sse"))[0], sse_resp),
    ]
    profile = build_profile(exchanges, "127.0.0.1:4000", "Chromium 1.2.3", "2026-11-26T17:00:00Z")
    assert profile["fetch"]["request_header_bytes"] == len(FETCH)
    assert profile["websocket"]["request_headers"][-1] == ["Origin", "{origin}"]
    assert profile["response_header_bytes"] == {"poll": len(POLL_RESPONSE) - 2, "sse": 47, "websocket": 56}
    assert set(profile) == {
        "browser", "recorded_at", "fetch", "websocket", "response_headers", "response_header_bytes", "notes",
    }  # fmt: skip


def header_block_bytes(start_line: str, headers: list[list[str]], host: str) -> int:
    """Bytes of a header block rebuilt from a profile: start line, ``name: value`` lines, blank line, all CRLF."""
    values = [v.replace("{origin}", f"http://{host}").replace("{host}", host) for _, v in headers]
    return len(start_line) + 2 + sum(len(n) + 2 + len(v) + 2 for (n, _), v in zip(headers, values, strict=True)) + 2


def test_committed_browser_profile_has_the_agreed_format() -> None:
    """configs/browser_profile.json, as the load generator reads it: keys, templates, byte counts that add up."""
    profile = json.loads(PROFILE_PATH.read_text())
    assert set(profile) == {
        "browser", "recorded_at", "fetch", "websocket", "response_headers", "response_header_bytes", "notes",
    }  # fmt: skip
    assert re.fullmatch(r"Chromium \d+(\.\d+){3}", profile["browser"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", profile["recorded_at"])
    lines = dict(zip(("fetch", "websocket"), re.findall(r"'(GET [^']+ HTTP/1\.1)'", profile["notes"]), strict=True))
    host = re.search(r"recorded on host:port of (\d+) characters", profile["notes"])
    assert host, "the notes must say how long the recorded host:port was"
    host_len = int(host.group(1))
    for kind in ("fetch", "websocket"):
        headers = profile[kind]["request_headers"]
        names = [n.lower() for n, _ in headers]
        assert headers[0] == ["Host", "{host}"] and "cookie" not in names
        assert all(isinstance(n, str) and isinstance(v, str) for n, v in headers)
        rebuilt = header_block_bytes(lines[kind], headers, "h" * host_len)
        assert rebuilt == profile[kind]["request_header_bytes"], kind
    assert ["Upgrade", "websocket"] in profile["websocket"]["request_headers"]
    assert ["Origin", "{origin}"] in profile["websocket"]["request_headers"]
    status = {"poll": "HTTP/1.1 200 OK", "sse": "HTTP/1.1 200 OK", "websocket": "HTTP/1.1 101 Switching Protocols"}
    for kind, start_line in status.items():
        rebuilt = header_block_bytes(start_line, profile["response_headers"][kind], "")
        assert rebuilt == profile["response_header_bytes"][kind], kind
