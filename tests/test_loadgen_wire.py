"""TCP_INFO parsing against hand-packed buffers and the real kernel, and the TCP/IP header formula."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from loadgen.runner import count_time_wait
from loadgen.wire import (
    REQUIRED_LENGTH,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    TcpInfo,
    WireCountersUnavailable,
    parse_tcp_info,
    read_tcp_info,
    tcpip_header_bytes,
)


def packed(state: int, options: int, acked: int, received: int, segs_out: int, segs_in: int, sent: int) -> bytes:
    buf = bytearray(232)
    buf[0], buf[5] = state, options
    struct.pack_into("=QQII", buf, 120, acked, received, segs_out, segs_in)
    struct.pack_into("=Q", buf, 200, sent)
    return bytes(buf)


def test_parse_reads_the_kernel_offsets() -> None:
    info = parse_tcp_info(packed(TCP_ESTABLISHED, 7, 101, 50, 4, 3, 100))
    assert info == TcpInfo(TCP_ESTABLISHED, 7, 101, 50, 4, 3, 100)
    assert info.timestamps
    assert info.stream_offsets() == (50, 100)  # the SYN counted in bytes_acked is removed


def test_peer_fin_counts_one_received_byte_and_is_removed() -> None:
    info = parse_tcp_info(packed(TCP_CLOSE_WAIT, 7, 101, 51, 5, 4, 100))
    assert info.peer_fin_received
    assert info.stream_offsets() == (50, 100)


def test_a_short_buffer_is_refused_not_read_as_zero() -> None:
    with pytest.raises(WireCountersUnavailable, match="tcpi_bytes_sent"):
        parse_tcp_info(packed(1, 0, 0, 0, 0, 0, 0)[: REQUIRED_LENGTH - 1])


def test_real_kernel_counters_match_the_bytes_sent() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        before = read_tcp_info(client)
        assert before.stream_offsets() == (0, 0)
        client.sendall(b"u" * 1000)
        got = 0
        while got < 1000:
            got += len(peer.recv(4096))
        peer.sendall(b"d" * 300)
        got = 0
        while got < 300:
            got += len(client.recv(4096))
        deadline = time.monotonic() + 2
        while read_tcp_info(client).stream_offsets() != (300, 1000) and time.monotonic() < deadline:
            time.sleep(0.001)  # the ACK of the last bytes may still be on its way
        after = read_tcp_info(client)
        assert after.stream_offsets() == (300, 1000)
        assert after.bytes_sent - before.bytes_sent == 1000
        assert after.segs_out > before.segs_out and after.segs_in > before.segs_in
        peer.close()
        deadline = time.monotonic() + 2
        while not read_tcp_info(client).peer_fin_received and time.monotonic() < deadline:
            time.sleep(0.001)
        closed = read_tcp_info(client)
        assert closed.bytes_received == 301  # the FIN counts one byte ...
        assert closed.stream_offsets() == (300, 1000)  # ... which stream_offsets removes
    finally:
        client.close()
        peer.close()
        server.close()


def test_tcpip_header_bytes() -> None:
    assert tcpip_header_bytes(10) == 10 * (20 + 20 + 12)
    assert tcpip_header_bytes(10, tcp_option_bytes=0) == 400
    assert tcpip_header_bytes(0) == 0
    with pytest.raises(ValueError):
        tcpip_header_bytes(-1)


def test_this_kernel_negotiates_timestamps_on_loopback() -> None:
    """The 12-byte option default of tcpip_header_bytes is what Linux loopback really uses."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        enabled = Path("/proc/sys/net/ipv4/tcp_timestamps").read_text().strip() != "0"
        assert read_tcp_info(client).timestamps is enabled
    finally:
        for s in (client, peer, server):
            s.close()


def test_count_time_wait_matches_both_ends() -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
    lines = [
        header,
        "   0: 0100007F:1F90 0100007F:C350 06 00000000:00000000 03:00000F9A 00000000     0        0 0",
        "   1: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000F9A 00000000     0        0 0",
        "   2: 0100007F:1F90 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 1",
        "   3: 0200007F:1F90 0100007F:C353 06 00000000:00000000 03:00000F9A 00000000     0        0 0",
        "   4: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D000 06 0 0 0 0 0",
    ]
    # 127.0.0.1:8080 in TIME_WAIT: rows 0, 1 and the IPv4-mapped row 4; row 2 is open, row 3 is 127.0.0.2.
    assert count_time_wait(lines[1:], "127.0.0.1", 8080) == 3
    assert count_time_wait(lines[1:], "127.0.0.1", 8081) == 0
