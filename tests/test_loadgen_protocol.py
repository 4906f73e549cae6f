"""Header profiles and the client-side parsers (HTTP head, poll body, SSE, WebSocket frames), without sockets."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadgen.client import event_fields
from loadgen.conn import ClientError, EncodedGet, ErrorKind, Head, ResponseParser, parse_head, read_head
from loadgen.headers import (
    ProfileError,
    cookie_value,
    header_block,
    header_block_bytes,
    make_profile,
    ws_key,
)
from loadgen.poll import parse_poll_body
from loadgen.runner import server_args, toml_value
from loadgen.sse import SseParser, split_chunk
from loadgen.ws import accept_value, encode_frame, mask, parse_frame_head, split_frame
from pushbench.config import LoadConfig, default_config, expand_cells

BROWSER_FIXTURE = {
    "browser": "Chromium 156.0.8078.73",
    "recorded_at": "2026-11-26T17:00:00Z",
    "fetch": {
        "request_headers": [
            ["Host", "{host}"],
            ["User-Agent", "Mozilla/5.0 Test"],
            ["Accept", "*/*"],
            ["Referer", "{origin}/"],
        ]
    },
    "websocket": {
        "request_headers": [
            ["Host", "{host}"],
            ["Connection", "Upgrade"],
            ["Upgrade", "websocket"],
            ["Origin", "{origin}"],
            ["Sec-WebSocket-Version", "13"],
            ["Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="],
            ["Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"],
        ]
    },
    "response_headers": {"poll": [], "sse": [], "websocket": []},
}


def load_section(**overrides: Any) -> LoadConfig:
    return replace(default_config().load, **overrides)


def test_header_block_bytes_by_hand() -> None:
    headers = [("Host", "127.0.0.1:8080")]
    assert header_block(headers) == b"Host: 127.0.0.1:8080\r\n"
    assert header_block_bytes(headers) == 4 + 2 + 14 + 2


def test_minimal_profile_is_host_only() -> None:
    profile = make_profile(load_section())
    assert profile.fetch_headers("h:1") == [("Host", "h:1")]
    assert profile.post_headers("h:1", "application/json", 95) == [
        ("Host", "h:1"),
        ("Content-Type", "application/json"),
        ("Content-Length", "95"),
    ]
    ws = profile.websocket_headers("h:1", "k" * 24, offer_deflate=False)
    assert [n for n, _ in ws] == ["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"]
    assert ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits") in profile.websocket_headers(
        "h:1", "k" * 24, offer_deflate=True
    )


def test_custom_profile() -> None:
    profile = make_profile(load_section(header_profile="custom", custom_headers={"X-Token": "abc"}))
    assert profile.fetch_headers("h:1") == [("Host", "h:1"), ("X-Token", "abc")]


def test_browser_profile_fills_placeholders_adds_cookie_and_fresh_key(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(BROWSER_FIXTURE))
    profile = make_profile(load_section(header_profile="browser", cookie_bytes=40, browser_profile_file=str(path)))
    fetch = profile.fetch_headers("127.0.0.1:8080")
    assert fetch[:4] == [
        ("Host", "127.0.0.1:8080"),
        ("User-Agent", "Mozilla/5.0 Test"),
        ("Accept", "*/*"),
        ("Referer", "http://127.0.0.1:8080/"),
    ]
    assert fetch[4][0] == "Cookie" and len(fetch[4][1]) == 40
    # Every header line is "Name: value\r\n": name, ": ", value, CRLF.
    assert header_block_bytes(fetch) == (4 + 2 + 14 + 2) + (10 + 2 + 16 + 2) + (6 + 2 + 3 + 2) + (7 + 2 + 22 + 2) + (
        6 + 2 + 40 + 2
    )
    key = ws_key(bytes(range(16)))
    ws = dict(profile.websocket_headers("127.0.0.1:8080", key, offer_deflate=False))
    assert ws["Sec-WebSocket-Key"] == key
    assert ws["Origin"] == "http://127.0.0.1:8080"
    assert ws["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits"  # what Chrome offers
    assert profile.details["browser"] == "Chromium 156.0.8078.73"


def test_missing_browser_profile_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ProfileError) as exc:
        make_profile(load_section(header_profile="browser", browser_profile_file=str(missing)))
    assert str(missing) in str(exc.value) and "make browser-profile" in str(exc.value)


def test_malformed_browser_profile(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"fetch": {"request_headers": [["Host"]]}, "websocket": {"request_headers": []}}))
    with pytest.raises(ProfileError, match=r"fetch\.request_headers"):
        make_profile(load_section(header_profile="browser", browser_profile_file=str(path)))


def test_cookie_value_has_the_exact_size() -> None:
    assert [len(cookie_value(n)) for n in (0, 1, 3, 4, 100, 5000)] == [0, 1, 3, 4, 100, 5000]
    assert cookie_value(100).startswith("sid=")


def test_parse_head() -> None:
    status, headers = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert status == 200 and headers == {"content-length": "5", "x-a": "1, 2"}
    with pytest.raises(ClientError, match="protocol"):
        parse_head(b"garbage\r\n\r\n")


def test_read_head_remembers_equal_heads_by_their_bytes() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
    head = read_head(raw)
    assert head == Head(200, {"content-length": "24", "connection": "close"}, False, False, 24)
    assert read_head(bytes(bytearray(raw))) is head  # an equal head: no second parse
    other = read_head(raw.replace(b"24", b"25"))
    assert other is not head and other.length == 25
    assert read_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == Head(
        200, {"transfer-encoding": "chunked"}, True, True, None
    )
    for _ in range(2):  # an error is raised each time, never remembered
        with pytest.raises(ClientError, match="Content-Length is not a number"):
            read_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")


def feed_in_pieces(stream: bytes, piece: int, at: int = 1000) -> tuple[ResponseParser, int]:
    """Feed ``stream`` (starting at stream offset ``at``) as ``Connection`` does: unconsumed bytes are handed over
    again with the next piece. Returns the parser and how many bytes it consumed in all."""
    parser = ResponseParser()
    buffer, consumed = b"", 0
    for cut in range(0, len(stream), piece):
        buffer += stream[cut : cut + piece]
        n = parser.feed(buffer, at + consumed)
        buffer, consumed = buffer[n:], consumed + n
        if parser.response is not None:
            break
    return parser, consumed


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_response_parser_content_length(piece: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"  # 57 bytes
    parser, consumed = feed_in_pieces(head + b"hello" + b"HTTP/1.1 next", piece)
    response = parser.response
    assert response is not None and consumed == 62  # the next response's bytes are left alone
    assert (response.status, response.body, response.body_offset, response.keep_alive) == (200, b"hello", 1057, False)
    assert response.headers == {"content-length": "5", "connection": "close"}


@pytest.mark.parametrize("piece", [1, 4, 1000])
def test_response_parser_chunked_offsets_are_the_first_chunks_data(piece: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"  # 47 bytes
    stream = head + b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    parser, consumed = feed_in_pieces(stream, piece)
    response = parser.response
    assert response is not None and consumed == len(stream)
    assert (response.body, response.body_offset, response.keep_alive) == (b"abcde", 1000 + 47 + 3, True)


def test_response_parser_empty_bodies() -> None:
    # 25 + 19 + 2 bytes of head; the empty body "starts" after it
    parser, _ = feed_in_pieces(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 1000)
    assert parser.response is not None and (parser.response.body, parser.response.body_offset) == (b"", 1046)
    # 47 bytes of head, 5 of last chunk and final CRLF: as before, the offset after them
    stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    parser, _ = feed_in_pieces(stream, 3)
    assert parser.response is not None and (parser.response.body, parser.response.body_offset) == (b"", 1052)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", "without Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "not a number"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"SSH-2.0\r\n\r\n", "bad status line"),
    ],
)
def test_response_parser_refuses_malformed_responses(stream: bytes, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        ResponseParser().feed(stream, 0)


def test_response_parser_waits_for_a_whole_head_and_refuses_an_endless_one() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Len", 0) == 0 and parser.response is None
    with pytest.raises(ClientError, match="too long"):
        parser.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, 0)


def test_encoded_get_is_the_request_line_and_header_block() -> None:
    get = EncodedGet.build("/poll", [("Host", "h:1"), ("Accept", "*/*")])
    block = b"Host: h:1\r\nAccept: */*\r\n\r\n"
    assert get.encode(None) == b"GET /poll HTTP/1.1\r\n" + block
    assert get.encode(0) == b"GET /poll?after=0 HTTP/1.1\r\n" + block
    assert get.encode(123456789) == b"GET /poll?after=123456789 HTTP/1.1\r\n" + block


def test_poll_body_spans_are_the_events_bytes() -> None:
    e1 = b'{"seq":5,"ts":17,"data":"ab"}'
    e2 = b'{"seq":6,"ts":18,"data":"cd"}'
    body = b'{"cursor":6,"events":[' + e1 + b"," + e2 + b"]}"
    cursor, events = parse_poll_body(body)
    assert cursor == 6
    assert [(s, t) for s, t, _, _ in events] == [(5, 17), (6, 18)]
    for (_, _, start, length), raw in zip(events, (e1, e2), strict=True):
        assert body[start : start + length] == raw
    assert parse_poll_body(b'{"cursor":9,"events":[]}') == (9, [])


def test_poll_body_spans_are_exact_whatever_the_whitespace() -> None:
    e1 = b'{"seq": 1, "ts": 2, "data": ""}'
    e2 = b'{ "ts":3,"seq":2 }'
    body = b'{"cursor": 2, "events": [ ' + e1 + b" ,\n " + e2 + b" ] }"
    cursor, events = parse_poll_body(body)
    assert cursor == 2 and [(s, t) for s, t, _, _ in events] == [(1, 2), (2, 3)]
    for (_, _, start, length), raw in zip(events, (e1, e2), strict=True):
        assert body[start : start + length] == raw


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"cursor":"1","events":[]}',  # a string cursor
        b'{"events":[]}',  # no cursor
        b'{"cursor":1,"events":[{"seq":"1","ts":2}]}',  # an event not of the contract's shape
        b'{"cursor":1,"events":[{"seq":1,"ts":2}',  # cut short
    ],
)
def test_a_body_that_is_not_a_poll_body_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ClientError) as info:
        parse_poll_body(body)
    assert info.value.kind is ErrorKind.PROTOCOL


@pytest.mark.parametrize(
    "raw",
    [
        b'{"seq":7,"ts":1700000000000000000,"data":"xx"}',  # what the server sends
        b' {"ts": 9, "seq": 7} \n',  # whitespace around, keys in any order
        '{"seq":7,"ts":9,"data":"\u00e9"}'.encode(),  # UTF-8 in the payload
    ],
)
def test_event_fields_reads_seq_and_ts_as_json_loads_does(raw: bytes) -> None:
    data = json.loads(raw)
    assert event_fields(raw) == (data["seq"], data["ts"])


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"nope", b'{"seq":1,"ts":2', b'{"seq":1,"ts":2}x', b'{"seq":1,"ts":2}{}', b'{"seq":1,"ts":2,"data":"\xff"}',
     b"[1, 2]", b'"seq"', b"null", b'{"seq":1}', b'{"seq":null,"ts":2}', b'{"seq":1,"ts":"soon"}',
     b'{"seq":"1","ts":2}', b'{"seq":1.5,"ts":2}', b'{"seq":1,"ts":2,"data":7}'],
)  # fmt: skip
def test_event_fields_refuses_what_is_not_an_event(raw: bytes) -> None:
    with pytest.raises(ClientError, match="not an event") as caught:
        event_fields(raw)
    assert caught.value.kind is ErrorKind.PROTOCOL


def test_sse_parser_across_chunks_with_offsets() -> None:
    parser = SseParser()
    stream = b': hi\n\nid: 7\ndata: {"seq":7}\n\nid: 8\ndata: {"seq":8}\n\n'
    events = []
    for cut in range(0, len(stream), 5):  # feed in 5-byte pieces at stream offset 100 + cut
        events += parser.feed(stream[cut : cut + 5], 100 + cut)
    assert [(e.event_id, e.data) for e in events] == [("7", b'{"seq":7}'), ("8", b'{"seq":8}')]
    for event in events:
        start = event.data_offset - 100
        assert stream[start : start + len(event.data)] == event.data
    assert parser.comments == 1


@pytest.mark.parametrize(
    "stream",
    [
        b"id: 7\ndata: {}\n\n",  # one whole record (the fast path)
        b"id: 7\r\ndata: {}\r\n\r\n",  # CRLF line ends: the general path
        b"id: 7\ndata:{}\n\n",  # no space after the colon
        b"id: 7\ndata: {}\n\nid: 8\ndata: {}\n\n",  # two records in one chunk
    ],
)
def test_sse_parser_one_chunk_same_as_byte_by_byte(stream: bytes) -> None:
    whole = SseParser().feed(stream, 40)
    parser = SseParser()
    pieces = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1], 40 + i)]
    assert whole == pieces and whole[0].event_id == "7" and whole[0].data == b"{}"
    assert stream[whole[0].data_offset - 40 :].startswith(b"{}")


def test_split_chunk_whole_partial_last_and_bad() -> None:
    data = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"
    assert split_chunk(data, 0) == (3, 8)
    assert split_chunk(data, 10) == (19, 22)
    assert split_chunk(data, 24) == (27, 27)  # the last chunk
    for cut in range(1, 10):
        assert split_chunk(data[:cut], 0) is None  # not wholly received yet
    with pytest.raises(ClientError, match="chunk size"):
        split_chunk(b"zz\r\n", 0)
    with pytest.raises(ClientError, match="CRLF"):
        split_chunk(b"2\r\nabXY", 0)


@pytest.mark.parametrize("length", [0, 5, 125, 126, 65535, 65536])
def test_split_frame_finds_payload_bounds(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    frame, at = encode_frame(0x1, payload, None)
    data = b"\x8a\x00" + frame + b"\x81"  # a pong before it, a first byte of the next frame after
    assert split_frame(data, 0) == (0x8A, 2, 2, b"")
    b0, start, end, key = split_frame(data, 2) or (0, 0, 0, b"")
    assert (b0, start - 2, key) == (0x81, at, b"") and data[start:end] == payload
    assert split_frame(data, len(data) - 1) is None
    for cut in (3, 2 + at - 1, len(data) - 2):
        if cut < 2 + len(frame):
            assert split_frame(data[:cut], 2) is None


def test_split_frame_masked() -> None:
    frame, at = encode_frame(0x1, b"hello", b"\x01\x02\x03\x04")
    _, start, end, key = split_frame(frame, 0) or (0, 0, 0, b"")
    assert key == b"\x01\x02\x03\x04" and start == at and mask(frame[start:end], key) == b"hello"


def test_ws_accept_value_rfc6455_example() -> None:
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(("length", "header"), [(95, 2), (125, 2), (126, 4), (145, 4), (70000, 10)])
def test_server_frames_header_sizes(length: int, header: int) -> None:
    frame, at = encode_frame(0x1, b"x" * length, None)
    assert at == header and len(frame) == length + header
    head = parse_frame_head(frame[:2])
    assert head.fin and head.opcode == 1 and not head.masked


def test_client_frames_are_masked_and_cost_six_bytes_up_to_125() -> None:
    payload = b'{"seq":12,"ts":1,"data":"abc"}'
    frame, at = encode_frame(0x1, payload, b"\x01\x02\x03\x04")
    assert at == 6 and len(frame) == len(payload) + 6
    assert parse_frame_head(frame[:2]).masked
    assert mask(frame[6:], b"\x01\x02\x03\x04") == payload


def test_toml_values_round_trip_for_server_args() -> None:
    for value in (True, 3, 2.5, 'a "quoted" \\ value', ["ws", "sse"], {"Server": "nginx", "X-A": "b"}):
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    cell = expand_cells(default_config(['server.extra_headers={Server = "x"}']))[0]
    args = server_args(cell)
    assert 'server.extra_headers={"Server" = "x"}' in args
    assert all(not a.startswith("--set load.") for a in args)


def test_request_header_bytes_of_a_minimal_websocket_handshake_by_hand() -> None:
    from loadgen.results import request_header_bytes

    profile = make_profile(load_section())
    # Host: 127.0.0.1:40000 (23) + Upgrade (20) + Connection (21) + Sec-WebSocket-Key (19 + 24 + 2) + Version (27)
    assert request_header_bytes(profile, "ws", "feed", "127.0.0.1:40000") == 23 + 20 + 21 + 45 + 27
    # + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" when compression is offered
    assert request_header_bytes(profile, "ws", "feed", "127.0.0.1:40000", ws_compress=True) == 136 + 70
    assert request_header_bytes(profile, "poll", "feed", "127.0.0.1:40000") == 23
    # POST /echo: Host + "Content-Type: application/json\r\n" (32) + "Content-Length: 0\r\n" (19)
    assert request_header_bytes(profile, "sse", "echo", "127.0.0.1:40000") == 23 + 32 + 19
