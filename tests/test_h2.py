"""HTTP/2 byte accounting: frames cut out of the stream by hand, and one request counted against the ``hpack``
package's own encoder and the kernel's TCP bytes through the real HAProxy."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import hpack
import pytest

from loadgen.conn import Connection, WindowBook
from loadgen.h2client import H2Session, WsFrameReader
from loadgen.h2frames import FLAG_END_HEADERS, FLAG_PADDED, PREFACE, FrameSplitter, FrameType, H2Tally, body_spans
from loadgen.headers import h2_request_headers
from loadgen.layers import TLS13_RECORD_OVERHEAD_BYTES
from loadgen.proxy import ProxyProcess, start_proxy
from loadgen.tls import client_context, make_certificates
from loadgen.wire import read_tcp_info
from loadgen.ws import encode_frame
from pushbench.config import ServerConfig
from pushbench.stacks import STACKS
from tests.conftest import start_server_process, timeout


def frame(type_: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([type_, flags]) + stream_id.to_bytes(4, "big") + payload


def test_frames_are_cut_wherever_reads_split_them() -> None:
    settings = frame(FrameType.SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64")  # MAX_CONCURRENT_STREAMS = 100
    headers = frame(FrameType.HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, b"\x02" + b"\x82\x84\x87" + b"\x00\x00")
    data = frame(FrameType.DATA, 0, 1, b'{"a":1}')
    stream = PREFACE + settings + headers + data
    for cut in range(1, len(stream)):
        splitter = FrameSplitter(preface=True)
        frames = splitter.feed(0, stream[:cut]) + splitter.feed(cut, stream[cut:])
        assert [f.type for f in frames] == [FrameType.SETTINGS, FrameType.HEADERS, FrameType.DATA]
    s, h, d = frames
    assert (s.offset, h.offset, d.offset) == (24, 24 + 15, 24 + 15 + 15)
    assert h.content() == (24 + 15 + 9 + 1, 3)  # pad length byte and 2 bytes of padding left out
    assert d.content() == (24 + 15 + 15 + 9, 7)
    tally = H2Tally()
    for f in frames:
        tally.add(f, lo=0)
    assert (tally.frames, tally.frame_headers, tally.hpack, tally.control) == (3, 27, 3, 6 + 3)
    assert tally.header_blocks == [3] and tally.first_block == 3
    outside = H2Tally()
    for f in frames:
        outside.add(f, lo=10_000)  # before the window: only the first block is remembered
    assert outside.frames == 0 and outside.first_block == 3


def test_body_spans_across_data_frames() -> None:
    segments = [(100, 10), (200, 5), (300, 20)]  # body bytes 0..9 at 100, 10..14 at 200, 15..34 at 300
    assert body_spans(segments, 8, 10) == [(108, 2), (200, 5), (300, 3)]
    assert body_spans(segments, 0, 10) == [(100, 10)]
    assert body_spans(segments, 16, 2) == [(301, 2)]


def test_websocket_frames_out_of_data_segments() -> None:
    a, _ = encode_frame(0x1, b"x" * 130, None)  # 4-byte header (126 + 2-byte length)
    b, _ = encode_frame(0x1, b"hello", None)
    reader = WsFrameReader()
    stream = a + b
    got = reader.feed(1000, stream[:3]) + reader.feed(1003, stream[3:140]) + reader.feed(1140, stream[140:])
    assert [(len(p), off) for _, off, p in got] == [(130, 1004), (5, 1000 + 134 + 2)]


@pytest.fixture(scope="module")
def h2_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, Path]]:
    if shutil.which("/usr/sbin/haproxy") is None:
        pytest.skip("HAProxy not installed")
    folder = tmp_path_factory.mktemp("h2")
    certs = make_certificates(folder, "ecdsa-p256")
    server = start_server_process("--set", "feed.rate_hz=50")
    proxy = start_proxy(
        stack=STACKS["h2-tls"], server_pem=certs.server_pem, ca_file=certs.ca_pem, backend_host="127.0.0.1",
        backend_port=server.port, server=ServerConfig(), work_dir=folder,
    )  # fmt: skip
    try:
        yield proxy, certs.ca_pem
    finally:
        proxy.stop()
        server.stop()
        server.proc.communicate()  # closes its pipes


def test_h2_request_costs_frame_header_hpack_block_and_one_record(h2_proxy: tuple[ProxyProcess, Path]) -> None:
    """Each poll request: the kernel counted 9 bytes of HEADERS frame header + the HPACK block the ``hpack``
    package computes for the same header list (its encoder carrying the same dynamic table) + one TLS 1.3 record
    (22 bytes). The first request pays the full block; later ones pay what the dynamic table could not index."""
    proxy, ca = h2_proxy

    async def main() -> tuple[list[int], list[int], H2Session]:
        book = WindowBook()
        ctx = client_context(STACKS["h2-tls"], ca)
        conn = await Connection.open(book, 0, 1, proxy.host, proxy.port, timeout(10), ctx)
        session = H2Session(conn)
        await session.start(timeout(10))
        await asyncio.sleep(0.05)  # our SETTINGS ACK is sent and acknowledged before counting starts
        encoder = hpack.Encoder()
        authority = f"{proxy.host}:{proxy.port}"
        expected, kernel = [], []
        cursor = None
        book.start()
        for _ in range(4):
            path = "/poll" if cursor is None else f"/poll?after={cursor}"
            headers = h2_request_headers("GET", "https", path, [("Host", authority), ("Accept", "*/*")])
            before = read_tcp_info(conn._sock).bytes_acked
            stream = await session.request(headers)
            assert await stream.response() == 200
            body = b"".join(d for _, d, _ in await stream.body())
            await asyncio.sleep(0.01)  # the request's ACK (already in: the response acknowledged it)
            kernel.append(read_tcp_info(conn._sock).bytes_acked - before)
            expected.append(9 + len(encoder.encode(headers)) + TLS13_RECORD_OVERHEAD_BYTES)
            cursor = int(body.split(b'"cursor":')[1].split(b",")[0])
        book.end()
        session.abort()
        return expected, kernel, session

    expected, kernel, session = asyncio.run(main())
    assert kernel == expected
    blocks = [n - 9 - 22 for n in expected]
    assert session.up_tally.header_blocks == blocks  # what the client reports: the same sizes
    assert session.up_tally.frame_headers == 9 * 4
    assert blocks[0] > blocks[2] and blocks[2] <= blocks[1]  # the first request pays the full block


def test_sslkeylogfile_gets_the_session_secrets(
    h2_proxy: tuple[ProxyProcess, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As curl and browsers do: with $SSLKEYLOGFILE set, a capture of the run can be decrypted in Wireshark."""
    proxy, ca = h2_proxy
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))

    async def main() -> str:
        conn = await Connection.open(
            WindowBook(), 0, 1, proxy.host, proxy.port, timeout(10), client_context(STACKS["h2-tls"], ca)
        )
        conn.abort()
        return conn.alpn

    assert asyncio.run(main()) == "h2"
    text = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text and "SERVER_TRAFFIC_SECRET_0" in text


def test_stream_data_is_stamped_when_the_session_reads_it_not_when_its_consumer_wakes(
    h2_proxy: tuple[ProxyProcess, Path],
) -> None:
    """SSE over HTTP/2: the session's reader stamps every DATA segment as it reads it (as HTTP/1.1 streams stamp
    each ``data_received`` chunk), so an event is timed when its bytes were parsed. A consumer 100 ms late (events
    every 20 ms) still gets the read times: the three segments after the first were read about 80, 60 and 40 ms before it woke."""
    proxy, ca = h2_proxy

    async def main() -> tuple[int, list[tuple[int, bytes, int]]]:
        conn = await Connection.open(
            WindowBook(), 0, 1, proxy.host, proxy.port, timeout(10), client_context(STACKS["h2-tls"], ca)
        )
        session = H2Session(conn)
        try:
            await session.start(timeout(10))
            headers = [("Host", f"{proxy.host}:{proxy.port}"), ("Accept", "text/event-stream")]
            stream = await session.request(h2_request_headers("GET", "https", "/sse", headers))
            assert await stream.response() == 200
            await stream.next_data()  # the stream flows
            await asyncio.sleep(0.1)  # the consumer is busy; the session's reader goes on reading
            woke_ns = time.time_ns()
            segments = []
            for _ in range(3):
                segment = await stream.next_data()
                assert segment is not None
                segments.append(segment)
            return woke_ns, segments
        finally:
            session.abort()

    woke_ns, segments = asyncio.run(main())
    for _, data, read_ns in segments:
        assert b"data: " in data
        assert woke_ns - read_ns >= 20_000_000  # stamped by the reader, tens of ms before the consumer woke
