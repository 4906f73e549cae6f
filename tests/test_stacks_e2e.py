"""The TLS and HTTP/2 stacks end to end: real HAProxy on 127.0.0.1 in front of the real server, real clients,
the kernel's byte counts split layer by layer and checked against arithmetic done by hand.

The default suite runs a few seconds-long cells; ``make test-stacks`` (marker ``stacks``) runs every transport
over every stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadgen.layers import TLS13_RECORD_OVERHEAD_BYTES
from tests.test_loadgen_e2e import event_bytes, run_loadgen

pytestmark = pytest.mark.skipif(shutil.which("/usr/sbin/haproxy") is None, reason="HAProxy not installed")


def layers_add_up(row: object, direction: str) -> None:
    """payload + HTTP + TLS records + TLS handshake = the kernel's TCP bytes, per direction."""
    get = row.__getitem__  # type: ignore[attr-defined]
    total = (
        get(f"bytes_{direction}_payload")
        + get(f"bytes_{direction}_http")
        + get(f"bytes_{direction}_tls")
        + get(f"bytes_{direction}_tls_handshake")
    )
    assert total == get(f"bytes_{direction}_tcp")


def test_h1_tls_websocket_event_costs_its_frame_header_plus_one_record(tmp_path: Path) -> None:
    """A 94..97-byte event alone in a TLS 1.3 record: 2 bytes of frame header + 22 of record (5 header,
    1 inner type, 16 AES-GCM tag) on top of the payload, as the kernel counted it; and short polls that each
    open a TLS connection (keepalive off) pay the handshake, reported apart."""
    run = run_loadgen(
        tmp_path,
        """
        [[sweep]]
        transport = ["ws"]
        stack = ["h1-tls"]

        [[sweep]]
        transport = ["poll"]
        stack = ["h1-tls"]
        keepalive = [false]
        """,
        rate_hz=10,
        clients=2,
    )
    assert run.rc == 0, run.stderr
    ws = run.row(transport="ws")
    meta = run.cell_meta(ws.cell_id)
    assert ws.status == "ok", meta["warnings"]
    seqs = range(meta["seq_first"], meta["seq_last"] + 1)
    assert ws.messages_received == ws.messages_expected == 2 * len(seqs) == 20
    assert ws.messages_lost == ws.messages_duplicated == 0
    assert ws.stack == "h1-tls" and ws.alpn == "http/1.1"
    assert ws.bytes_down_payload == 2 * sum(event_bytes(s, 10**18, 50) for s in seqs)
    n = ws.messages_received
    assert ws.bytes_down_http == 2 * n  # RFC 6455 header of a <= 125-byte frame
    assert ws.bytes_down_tls == TLS13_RECORD_OVERHEAD_BYTES * n == 22 * n
    assert ws.bytes_down_tcp == ws.bytes_down_payload + (2 + 22) * n  # the kernel's count, nothing else
    assert ws.bytes_tls_handshake == 0 and ws.connections_opened == 0  # connected before the window
    assert ws.bytes_up_tcp == 0
    assert ws.proxy_cpu_s >= 0 and ws.proxy_rss_bytes > 1_000_000
    assert ws.server_total_cpu_s == pytest.approx(ws.server_cpu_s + ws.proxy_cpu_s)
    layers_add_up(ws, "down")

    poll = run.row(transport="poll")
    assert poll.status == "ok", run.cell_meta(poll.cell_id)["warnings"]
    assert poll.messages_lost == poll.messages_duplicated == 0
    assert poll.messages_received == poll.messages_expected
    conns = run.connections[(run.connections.cell_id == poll.cell_id) & (run.connections.bytes_down_tls_handshake > 0)]
    assert poll.connections_opened == len(conns) >= 8  # one TLS connection per poll (0.2 s interval, 2 clients)
    assert poll.bytes_tls_handshake == conns.bytes_down_tls_handshake.sum() + conns.bytes_up_tls_handshake.sum()
    # TLS 1.3 with a P-256 certificate: the server's flight (ServerHello .. Finished) is several hundred bytes,
    # the client's (ClientHello, Finished) a few hundred; what each carries varies only by a few signature bytes.
    assert 500 < conns.bytes_down_tls_handshake.min() <= conns.bytes_down_tls_handshake.max() < 2000
    assert conns.bytes_down_tls_handshake.max() - conns.bytes_down_tls_handshake.min() <= 4
    assert 200 < conns.bytes_up_tls_handshake.min() < 1000
    # Up, after the handshake, each connection carried one request: exactly one record's overhead. When the proxy's
    # close_notify (option httpclose) is read in the same turn as the answer, before the client closes, Python's
    # TLS layer answers it with its own at once (asyncio.sslproto: _start_shutdown on close_notify), so that
    # connection's count also holds one alert record: 2 bytes of alert in a record's overhead.
    up_records = conns.bytes_up_tcp - conns.bytes_up_plain - conns.bytes_up_tls_handshake
    close_notify = TLS13_RECORD_OVERHEAD_BYTES + 2
    assert set(up_records) <= {TLS13_RECORD_OVERHEAD_BYTES, TLS13_RECORD_OVERHEAD_BYTES + close_notify}, (
        up_records.tolist()
    )
    for direction in ("down", "up"):
        layers_add_up(poll, direction)
    assert poll.bytes_up_tls > 0 and poll.bytes_down_tls > 0


def test_missing_proxy_is_one_line_per_tls_stack_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHBENCH_HAPROXY", str(tmp_path / "no-haproxy"))
    run = run_loadgen(tmp_path, '[matrix]\ntransport = ["ws"]\nstack = ["h1", "h1-tls", "h2-tls"]\n')
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2, lines  # one line per TLS stack; h1 is fine
    assert all("no-haproxy" in line and "apt-get install haproxy" in line for line in lines)
    assert "load.stack = 'h1-tls'" in lines[0] and "load.stack = 'h2-tls'" in lines[1]
    assert not any((tmp_path / "results").glob("*"))


def test_unusable_certificate_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    run = run_loadgen(tmp_path, "", extra_load=f'stack = "h1-tls"\ntls_cert_file = "{bad}"\ntls_ca_file = "{bad}"')
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "load.tls_cert_file" in lines[0]
    assert not any((tmp_path / "results").glob("*"))


def test_h2_tls_polls_share_one_connection_and_websocket_uses_rfc8441(tmp_path: Path) -> None:
    """Over HTTP/2 a client's polls are streams on its one TCP connection; after the first request HPACK sends
    a short block; a WebSocket rides an extended CONNECT stream (HAProxy 2.6 advertises RFC 8441): each event
    costs a DATA frame header (9), its RFC 6455 header (2) and one TLS record (22)."""
    run = run_loadgen(
        tmp_path,
        '[matrix]\ntransport = ["poll", "ws"]\nstack = ["h2-tls"]\n',
        rate_hz=10,
        clients=2,
        extra_load='header_profile = "browser"\ncookie_bytes = 40',
    )
    assert run.rc == 0, run.stderr
    poll = run.row(transport="poll")
    assert poll.status == "ok", run.cell_meta(poll.cell_id)["warnings"]
    assert poll.messages_lost == poll.messages_duplicated == 0 and poll.messages_received == poll.messages_expected
    assert poll.alpn == "h2"
    conns = run.connections[run.connections.cell_id == poll.cell_id]
    assert len(conns) == 2 and conns.client.nunique() == 2  # one connection per client, opened before the window
    assert poll.connections_opened == 0
    assert poll.h2_request_blocks >= 8  # every 0.2 s for 1 s, 2 clients: many requests on the two connections
    # The browser profile's first request pays the full block (hundreds of bytes); later polls a few dozen.
    assert poll.h2_request_block_first_bytes > 200 > 3 * poll.h2_request_block_median_bytes
    assert poll.bytes_up_h2_frame_headers == 9 * poll.h2_request_blocks  # one HEADERS frame per GET, no body
    for direction in ("down", "up"):
        layers_add_up(poll, direction)
    # Every request went out alone in its own TLS record.
    assert poll.bytes_up_tls == TLS13_RECORD_OVERHEAD_BYTES * poll.h2_request_blocks
    assert poll.bytes_up_http == poll.bytes_up_h2_frame_headers + poll.bytes_up_hpack + poll.bytes_up_h2_control

    ws = run.row(transport="ws")
    assert ws.status == "ok", run.cell_meta(ws.cell_id)["warnings"]
    assert ws.messages_lost == ws.messages_duplicated == 0 and ws.messages_received == ws.messages_expected == 20
    assert ws.alpn == "h2"  # RFC 8441: no separate HTTP/1.1 connection
    n = ws.messages_received
    assert ws.bytes_down_http == (9 + 2) * n and ws.bytes_down_h2_frame_headers == 9 * n
    assert ws.bytes_down_tls == 22 * n
    assert ws.bytes_down_tcp == ws.bytes_down_payload + (9 + 2 + 22) * n
    layers_add_up(ws, "down")


@pytest.mark.stacks
@pytest.mark.parametrize("stack", ["h1-tls", "h2-tls"])
def test_every_transport_and_scenario_over_a_tls_stack(tmp_path: Path, stack: str) -> None:
    run = run_loadgen(
        tmp_path,
        f"""
        [[sweep]]
        transport = ["poll", "longpoll", "sse", "ws"]
        stack = ["{stack}"]

        [[sweep]]
        transport = ["poll", "ws"]
        scenario = ["echo"]
        stack = ["{stack}"]
        """,
        rate_hz=10,
        clients=3,
    )
    assert run.rc == 0, run.stderr
    assert len(run.summary) == 6
    for _, row in run.summary.iterrows():
        assert row.status == "ok", (row.transport, row.scenario, run.cell_meta(row.cell_id)["warnings"])
        assert row.messages_lost == row.messages_duplicated == 0, (row.transport, row.scenario)
        assert row.messages_received == row.messages_expected > 0
        assert row.alpn == ("h2" if stack == "h2-tls" else "http/1.1")
        for direction in ("down", "up"):
            layers_add_up(row, direction)
        assert row.bytes_down_tls > 0 and row.proxy_rss_bytes > 0


@pytest.mark.stacks
def test_websocket_without_rfc8441_takes_its_own_http1_connection(tmp_path: Path) -> None:
    """A proxy that does not advertise RFC 8441: the HTTP/2 client's WebSocket goes over HTTP/1.1 + TLS."""
    run = run_loadgen(
        tmp_path,
        '[matrix]\ntransport = ["ws"]\nstack = ["h2-tls"]\nh2_extended_connect = [false]\n',
        rate_hz=10,
        clients=2,
    )
    assert run.rc == 0, run.stderr
    ws = run.row(transport="ws")
    assert ws.status == "ok", run.cell_meta(ws.cell_id)["warnings"]
    assert ws.messages_lost == ws.messages_duplicated == 0 and ws.messages_received == ws.messages_expected
    assert ws.alpn == "http/1.1"  # the fallback, recorded
    n = ws.messages_received
    assert ws.bytes_down_http == 2 * n and ws.bytes_down_tls == 22 * n  # RFC 6455 frames, no HTTP/2 framing
