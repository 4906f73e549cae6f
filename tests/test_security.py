"""Security defaults (issue 5): loopback bind, Origin checks on /ws and /sse, CORS off unless configured,
a connection limit answered with 503."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import aiohttp
import pytest
from conftest import run, running_server, timeout
from rawwire import RawWebSocket, get, http_request

from servers.security import is_same_origin, origin_allowed

FAST = ("feed.rate_hz=50", "feed.payload_bytes=20")


def test_binds_loopback_by_default_and_warns_on_all_interfaces(server_process: Any) -> None:
    quiet = server_process()
    assert quiet.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{quiet.url}/stats", timeout=timeout(5)) as resp:
        assert resp.status == 200
    assert quiet.stop() == 0
    assert quiet.proc.stderr is not None and "warning" not in quiet.proc.stderr.read()

    exposed = server_process("--set", 'server.host="0.0.0.0"')
    assert exposed.url.startswith("http://0.0.0.0:")
    # Once it answers (on loopback: nothing here talks to another address) its start-up messages are out.
    with urllib.request.urlopen(f"http://127.0.0.1:{exposed.port}/stats", timeout=timeout(5)) as resp:
        assert resp.status == 200
    assert exposed.stop() == 0
    assert exposed.proc.stderr is not None
    assert "warning: bound to all interfaces (0.0.0.0)" in exposed.proc.stderr.read()


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("http://LOCALHOST:8080", "localhost:8080", True),
        ("http://example.com", "example.com:80", True),
        ("https://example.com", "example.com", True),
        ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
        ("http://evil.example:8080", "127.0.0.1:8080", False),
        ("http://127.0.0.1.evil.example:8080", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("file://", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, False),
    ],
)
def test_same_origin_rule(origin: str, host: str | None, same: bool) -> None:
    assert is_same_origin(origin, host) is same


def test_allowed_origins_and_missing_origin() -> None:
    listed = frozenset({"http://app.example:3000"})
    assert origin_allowed(None, "127.0.0.1:1", frozenset())  # curl, load generators
    assert origin_allowed("http://APP.example:3000/", "127.0.0.1:1", listed)
    assert not origin_allowed("http://app.example:3001", "127.0.0.1:1", listed)
    assert origin_allowed("http://anything.example", "127.0.0.1:1", frozenset({"*"}))


def test_foreign_origin_gets_403_on_ws_and_sse_and_is_counted() -> None:
    async def body() -> None:
        async with running_server(*FAST, "server.allowed_origins=['http://dashboard.example:3000']") as srv:
            own = f"http://127.0.0.1:{srv.port}"
            for path in ("/ws", "/ws?mode=echo"):
                for origin in ("http://evil.example", "null", f"http://127.0.0.1:{srv.port + 1}"):
                    with pytest.raises(ConnectionRefusedError, match="handshake answered 403"):
                        await RawWebSocket.connect(srv.host, srv.port, path, f"Origin: {origin}\r\n")
                for headers in ("", f"Origin: {own}\r\n", "Origin: http://dashboard.example:3000\r\n"):
                    ws = await RawWebSocket.connect(srv.host, srv.port, path, headers)
                    ws.close()
            answer = await http_request(srv.host, srv.port, get("/sse", extra="Origin: http://evil.example\r\n"))
            assert answer.status == 403
            error = answer.json()
            assert "http://evil.example" in error["error"] and "server.allowed_origins" in error["error"]
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{srv.url}/sse", headers={"Origin": own}) as resp,
            ):
                assert resp.status == 200 and resp.content_type == "text/event-stream"
            # Plain HTTP endpoints are CORS's business, not the Origin check's.
            answer = await http_request(srv.host, srv.port, get("/poll", extra="Origin: http://evil.example\r\n"))
            assert answer.status == 200
            stats = srv.state.stats
            assert stats.rejected["foreign_origin"] == 7 and stats.rejected["http_403"] == 7

    run(body())


def test_cors_is_off_by_default() -> None:
    async def body() -> None:
        async with running_server(*FAST) as srv:
            answer = await http_request(srv.host, srv.port, get("/poll", extra="Origin: http://app.example\r\n"))
            assert answer.status == 200 and "access-control-allow-origin" not in answer.headers
            preflight = (
                b"OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n"
                b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
            )
            answer = await http_request(srv.host, srv.port, preflight)
            assert answer.status == 405 and "access-control-allow-origin" not in answer.headers

    run(body())


def test_cors_for_listed_origins_only() -> None:
    async def body() -> None:
        async with running_server(*FAST, "server.cors_origins=['http://app.example:8000']") as srv:
            listed = "Origin: http://app.example:8000\r\n"
            answer = await http_request(srv.host, srv.port, get("/poll", extra=listed))
            assert answer.headers["access-control-allow-origin"] == "http://app.example:8000"
            assert "Origin" in answer.headers["vary"]
            error = await http_request(srv.host, srv.port, get("/poll?after=x", extra=listed))
            assert error.status == 400 and error.headers["access-control-allow-origin"] == "http://app.example:8000"
            other = await http_request(srv.host, srv.port, get("/poll", extra="Origin: http://other.example\r\n"))
            assert other.status == 200 and "access-control-allow-origin" not in other.headers

            def preflight(path: str, origin: str) -> bytes:
                return (
                    f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST"
                    "\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
                ).encode()

            ok = await http_request(srv.host, srv.port, preflight("/echo", "http://app.example:8000"))
            assert ok.status == 204
            assert ok.headers["access-control-allow-origin"] == "http://app.example:8000"
            assert "POST" in ok.headers["access-control-allow-methods"]
            assert ok.headers["access-control-allow-headers"] == "content-type"
            refused = await http_request(srv.host, srv.port, preflight("/echo", "http://other.example"))
            assert refused.status == 405 and "access-control-allow-origin" not in refused.headers
            unknown = await http_request(srv.host, srv.port, preflight("/nowhere", "http://app.example:8000"))
            assert unknown.status == 404

    run(body())


def test_connections_beyond_the_limit_get_503_and_the_server_carries_on() -> None:
    async def body() -> None:
        async with running_server(*FAST, "server.max_connections=3") as srv:
            keep = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection(srv.host, srv.port)
                writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: stays open
                assert (await asyncio.wait_for(reader.readline(), timeout(5))).startswith(b"HTTP/1.1 200")
                keep.append(writer)
            answer = await http_request(srv.host, srv.port, get("/poll"))
            assert answer.status == 503
            assert "server.max_connections" in answer.json()["error"] and "3" in answer.json()["error"]
            with pytest.raises(ConnectionRefusedError, match="handshake answered 503"):
                await RawWebSocket.connect(srv.host, srv.port, "/ws")
            stats = srv.state.stats
            assert stats.rejected["max_connections"] == 2 and stats.rejected["http_503"] == 2
            keep.pop().close()
            await asyncio.sleep(0.1)  # the server sees the close
            answer = await http_request(srv.host, srv.port, get("/poll"))
            assert answer.status == 200
            for writer in keep:
                writer.close()

    run(body())
