"""The broadcast's framing (servers.fanout): the bytes written once per event must be what aiohttp would write."""

from __future__ import annotations

import struct

from servers.fanout import http_chunk, ws_text_frame


def test_ws_text_frame_header_sizes_rfc6455() -> None:
    assert ws_text_frame(b"hi") == b"\x81\x02hi"
    assert ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert ws_text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)
    assert len(ws_text_frame(b"x" * 145)) == 145 + 4  # a 100-byte-payload event: 4-byte header


def test_http_chunk_hex_size_and_crlf() -> None:
    assert http_chunk(b"id: 1\ndata: {}\n\n") == b"10\r\nid: 1\ndata: {}\n\n\r\n"
    assert http_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
