"""``python -m loadgen`` end to end on loopback: real servers, real clients, kernel byte counts checked by hand.

Each run is seconds long. The figures are checked against arithmetic a reader can redo: RFC 6455 frame
headers, request bytes from the request line and the header profile, one connection per poll without
keep-alive, short-poll latency near half the interval.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import ROOT, timeout

BASE = """
[feed]
rate_hz = {rate_hz}
payload_bytes = {payload_bytes}

[server]
ws_heartbeat_s = 0      # no pings inside the window: every byte is a frame we can account for
sse_heartbeat_s = 0

[load]
clients = {clients}
duration_s = {duration_s}
warmup_s = {warmup_s}
ramp_up_s = {ramp_up_s}
poll_interval_s = {poll_interval_s}
send_interval_s = 0.05
{extra_load}
"""


@dataclass
class Run:
    rc: int
    stderr: str
    folder: Path | None
    summary: pd.DataFrame
    connections: pd.DataFrame
    meta: dict[str, Any]
    seconds: float

    def row(self, **match: Any) -> pd.Series:
        rows = self.summary
        for key, value in match.items():
            rows = rows[rows[key] == value]
        assert len(rows) == 1, f"{match}: {len(rows)} rows"
        return rows.iloc[0]

    def cell_meta(self, cell_id: str) -> dict[str, Any]:
        return next(c for c in self.meta["cells"] if c["cell_id"] == cell_id)


def run_loadgen(
    tmp_path: Path,
    tables: str,
    *,
    rate_hz: float = 20,
    payload_bytes: int = 50,
    clients: int = 3,
    duration_s: float = 1.0,
    poll_interval_s: float = 0.2,
    extra_load: str = "",
    warmup_s: float = 0.3,
    ramp_up_s: float = 0.1,
    args: tuple[str, ...] = (),
    on_start: Any = None,
    preexec: Callable[[], None] | None = None,
) -> Run:
    config = tmp_path / "e2e.toml"
    config.write_text(
        BASE.format(
            rate_hz=rate_hz,
            payload_bytes=payload_bytes,
            clients=clients,
            duration_s=duration_s,
            poll_interval_s=poll_interval_s,
            warmup_s=warmup_s,
            ramp_up_s=ramp_up_s,
            extra_load=extra_load,
        )
        + textwrap.dedent(tables)
    )
    out = tmp_path / "results"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(out), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=preexec,
    )
    if on_start is not None:
        on_start(proc)
    try:
        _, stderr = proc.communicate(timeout=timeout(120))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    seconds = time.monotonic() - started
    latest = out / "latest"
    if proc.returncode != 0 or not latest.exists():
        return Run(proc.returncode, stderr, None, pd.DataFrame(), pd.DataFrame(), {}, seconds)
    folder = latest.resolve()
    return Run(
        proc.returncode,
        stderr,
        folder,
        pd.read_csv(folder / "summary.csv"),
        pd.read_parquet(folder / "connections.parquet"),
        json.loads((folder / "run.json").read_text()),
        seconds,
    )


def event_bytes(seq: int, ts: int, payload_bytes: int) -> int:
    """Size of one serialized event: {"seq":N,"ts":T,"data":"<payload>"} (compact JSON)."""
    return len(f'{{"seq":{seq},"ts":{ts},"data":""}}') + payload_bytes


def test_websocket_frame_overhead_is_exactly_the_rfc6455_header(tmp_path: Path) -> None:
    """50-byte data → 94..97-byte events → 2-byte frame headers; 100-byte data → 144+ bytes → 4-byte headers.

    (An event with 100 bytes of data is not a 100-byte frame: the JSON around it adds 44 + digits bytes.)
    Echo frames from the client are masked: 2 + 4 bytes each way up, 2 down.
    """
    run = run_loadgen(
        tmp_path,
        """
        [[sweep]]
        transport = ["ws"]
        payload_bytes = [50, 100]

        [[sweep]]
        transport = ["ws"]
        scenario = ["echo"]
        payload_bytes = [50]
        """,
        rate_hz=10,  # 50 ms between a publication and the window edge: room for a busy machine
    )
    assert run.rc == 0, run.stderr
    assert len(run.summary) == 3
    for payload_bytes, header in ((50, 2), (100, 4)):
        row = run.row(scenario="feed", payload_bytes=payload_bytes)
        meta = run.cell_meta(row.cell_id)
        assert row.status == "ok", meta["warnings"]
        seqs = range(meta["seq_first"], meta["seq_last"] + 1)
        assert row.events_published == len(seqs) == 10  # 10 Hz for 1 s
        assert row.messages_expected == row.messages_received == 3 * len(seqs)
        assert row.messages_lost == row.messages_duplicated == 0
        # The payload is every event's serialized bytes (ts has 19 digits until 2286), for 3 clients.
        assert row.bytes_down_payload == 3 * sum(event_bytes(s, 10**18, payload_bytes) for s in seqs)
        size = event_bytes(seqs[0], 10**18, payload_bytes)
        assert (size <= 125) == (header == 2)
        # The window starts half a tick between publications, so every frame lies wholly inside it:
        # the kernel counted exactly payload + one frame header per event, nothing else.
        assert row.bytes_down_tcp == row.bytes_down_payload + header * row.messages_received
        assert row.bytes_down_overhead == header * row.messages_received
        assert row.bytes_up_tcp == row.bytes_up_payload == 0  # no pings, no pongs, no requests
        assert row.connections_opened == 0  # connected during the ramp-up, before the window
        assert row.bytes_tcpip_headers == row.tcp_segments * 52  # 20 IP + 20 TCP + 12 timestamps
        # Independent count: the server's own /stats says how many events it handed to WebSockets (read at the
        # window edges by another process, so one tick per client may fall on either side).
        assert abs(row.server_deliveries - row.messages_received) <= 3
        # The per-connection records add up to the row.
        conns = run.connections[run.connections.cell_id == row.cell_id]
        assert len(conns) == 3
        assert conns.bytes_down_tcp.sum() == row.bytes_down_tcp
        assert conns.bytes_down_payload.sum() == row.bytes_down_payload

    echo = run.row(scenario="echo")
    assert echo.status == "ok", run.cell_meta(echo.cell_id)["warnings"]
    assert echo.messages_lost == echo.messages_duplicated == 0
    assert echo.messages_received == echo.messages_expected == 3 * 20  # every 50 ms for 1 s, 3 clients
    # Echo messages have the event shape; 50 bytes of data and a 1-2 digit seq → 94 or 95 bytes, <= 125.
    frames_up = echo.bytes_up_tcp - echo.bytes_up_payload
    frames_down = echo.bytes_down_tcp - echo.bytes_down_payload
    assert frames_up % 6 == 0 and frames_down % 2 == 0
    n_up, n_down = frames_up // 6, frames_down // 2
    assert 94 * n_up <= echo.bytes_up_payload <= 95 * n_up
    assert 94 * n_down <= echo.bytes_down_payload <= 95 * n_down
    assert abs(n_up - echo.messages_expected) <= 3 and abs(n_down - echo.messages_expected) <= 3


def test_polling_connections_latency_and_request_bytes(tmp_path: Path) -> None:
    """Keep-alive: one connection per client; keepalive=false: one per poll. Short-poll latency ≈ T/2.

    Request bytes by hand: each poll in the window is ``GET /poll?after=NN HTTP/1.1\\r\\n`` (29 bytes with a
    two-digit cursor), the profile's header lines, and a blank line.
    """
    profile = tmp_path / "browser_profile.json"
    profile.write_text(
        json.dumps(
            {
                "browser": "fixture",
                "fetch": {"request_headers": [["Host", "{host}"], ["User-Agent", "X" * 100], ["Referer", "{origin}/"]]},
                "websocket": {"request_headers": [["Host", "{host}"], ["Origin", "{origin}"]]},
                "response_headers": {},
            }
        )
    )
    run = run_loadgen(
        tmp_path,
        """
        [[sweep]]
        transport = ["poll"]
        keepalive = [true, false]

        [[sweep]]
        transport = ["poll"]
        header_profile = ["browser"]

        [[sweep]]
        transport = ["longpoll", "sse"]
        """,
        extra_load=f'cookie_bytes = 64\nbrowser_profile_file = "{profile}"',
    )
    assert run.rc == 0, run.stderr
    polls_per_client = 5  # the window is 1 s = 5 intervals of 0.2 s, whatever each client's phase
    interval_ms = 200

    for row in run.summary.itertuples():
        assert row.messages_lost == 0 and row.messages_duplicated == 0, row
        assert row.messages_received == row.messages_expected == 3 * 20, row

    kept = run.row(transport="poll", keepalive=True, header_profile="minimal")
    conns = run.connections[run.connections.cell_id == kept.cell_id]
    assert sorted(conns.client) == [0, 1, 2]  # one connection per client, opened before the window
    assert kept.connections_opened == 0 and kept.server_connections_accepted == 0
    request = 29 + kept.request_header_bytes + 2
    assert kept.bytes_up_tcp == 3 * polls_per_client * request
    assert 0.3 * interval_ms < kept.latency_mean_ms < 0.7 * interval_ms

    closed = run.row(transport="poll", keepalive=False)
    conns = run.connections[run.connections.cell_id == closed.cell_id]
    assert closed.connections_opened == 3 * polls_per_client
    assert len(conns) == 3 * polls_per_client
    assert set(conns.bytes_up_tcp) == {29 + closed.request_header_bytes + 2}  # one request per connection
    assert closed.server_connections_accepted == closed.connections_opened
    # Each connection: SYN, SYN-ACK, ACK, request, response (+ its ACK), FIN, ACK, FIN, ACK.
    assert (conns.segs_in + conns.segs_out).min() >= 9

    browser = run.row(transport="poll", header_profile="browser")
    # "Name: value\r\n" each: Host, User-Agent (100 X), Referer (http://127.0.0.1:PORT/), Cookie (64 bytes).
    port_digits = kept.request_header_bytes - len("Host: 127.0.0.1:\r\n")
    assert browser.request_header_bytes == (16 + port_digits + 2) + 114 + (9 + 17 + port_digits + 1 + 2) + 74
    assert browser.bytes_up_tcp == 3 * polls_per_client * (29 + browser.request_header_bytes + 2)

    for transport in ("longpoll", "sse"):
        push = run.row(transport=transport)
        assert push.latency_p50_ms < 0.2 * interval_ms, push
    assert run.row(transport="sse").bytes_up_tcp == 0


def test_sigusr1_drop_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    """Every connection cut mid-window: clients reconnect and resume by cursor / Last-Event-ID / ?after."""
    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["longpoll", "sse", "ws"]
        """,
        extra_load="fault_drop_at_s = 0.5",
    )
    assert run.rc == 0, run.stderr
    for row in run.summary.itertuples():
        meta = run.cell_meta(row.cell_id)
        assert any("SIGUSR1" in w for w in meta["warnings"]), meta["warnings"]
        assert row.messages_lost == 0 and row.messages_duplicated == 0, (row.transport, meta)
        assert row.messages_received == row.messages_expected == 3 * 20
        assert row.connections_opened >= 3, row.transport  # every client had to reconnect inside the window
        if row.transport in ("sse", "ws"):
            assert row.errors_disconnect == 3 and row.reconnects >= 3, row  # each stream was cut once


def test_killed_server_marks_the_cell_incomplete_and_counts_the_loss(tmp_path: Path) -> None:
    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["ws"]
        """,
        extra_load="fault_kill_at_s = 0.5",
    )
    assert run.rc == 0, run.stderr
    assert run.seconds < timeout(30)  # never hangs
    row = run.row(transport="ws")
    meta = run.cell_meta(row.cell_id)
    assert row.status == "incomplete"
    assert any("server exited" in w for w in meta["warnings"])
    assert row.messages_expected == 3 * 20
    assert 0 < row.messages_received < row.messages_expected  # what came before the kill is kept
    assert row.messages_received + row.messages_lost == row.messages_expected
    assert row.errors_disconnect == 3  # each stream ended when the server died ...
    assert row.errors_connect > 0  # ... and reconnecting was refused
    assert row.errors == row.errors_connect + row.errors_disconnect + row.errors_timeout + row.errors_protocol + (
        row.errors_http_status
    )


def test_config_errors_exit_2_and_leave_no_results(tmp_path: Path) -> None:
    run = run_loadgen(tmp_path, '[matrix]\ntransport = ["ws", "carrier-pigeon"]\n', extra_load="workers = 0")
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert any("load.workers" in line and "e2e.toml" in line for line in lines)
    assert any("matrix.transport[1]" in line for line in lines)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_missing_browser_profile_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    run = run_loadgen(tmp_path, "", extra_load=f'header_profile = "browser"\nbrowser_profile_file = "{missing}"')
    assert run.rc == 2
    assert str(missing) in run.stderr and "make browser-profile" in run.stderr
    assert not any((tmp_path / "results").glob("*"))


def test_unwritable_out_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = run_loadgen(tmp_path, "", args=("--out", str(blocker / "results")))
    assert run.rc == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "--out" in run.stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_ctrl_c_leaves_no_half_written_folder(tmp_path: Path) -> None:
    def interrupt(proc: subprocess.Popen[str]) -> None:
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT)

    run = run_loadgen(tmp_path, '[matrix]\ntransport = ["ws", "sse"]\n', on_start=interrupt)
    assert run.rc == 130
    out = tmp_path / "results"
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_a_client_worker_out_of_descriptors_is_named_by_stopped_by(tmp_path: Path) -> None:
    """A real EMFILE: the load generator runs with RLIMIT_NOFILE lowered to 160 (soft and hard: its server and
    worker inherit it and cannot raise it). 100 WebSocket clients need two descriptors each in their worker, the
    server one each: the worker runs out first, its connects fail with EMFILE, and the cell's stopped_by says so."""
    nofile = 160

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["ws"]
        """,
        clients=100,
        rate_hz=10,
        duration_s=0.5,
        warmup_s=0.2,
        preexec=low_nofile,
    )
    assert run.rc == 0, run.stderr
    row = run.row(transport="ws")
    prefix = f"client fd limit: RLIMIT_NOFILE {nofile} per worker, two per connection ("
    assert str(row.stopped_by).startswith(prefix), row.stopped_by
    assert "server fd limit" not in row.stopped_by
    meta = run.cell_meta(row.cell_id)
    failed = meta["limit_errors"]["fd"]
    assert failed > 0 and prefix + f"{failed:,} connects failed with EMFILE)" == row.stopped_by
    assert row.errors_connect == failed and "Too many open files" in meta["error_samples"][0]
    assert row.connections_peak < 100 and row.messages_lost > 0  # the clients without a descriptor got nothing


def test_many_clients_on_two_workers_lose_nothing(tmp_path: Path) -> None:
    """300 clients split over two worker processes, every transport: every event to every client, once."""
    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["poll", "longpoll", "sse", "ws"]
        """,
        clients=300,
        rate_hz=10,
        warmup_s=0.5,
        ramp_up_s=0.5,
        extra_load="workers = 2",
    )
    assert run.rc == 0, run.stderr
    for row in run.summary.itertuples():
        meta = run.cell_meta(row.cell_id)
        assert row.status == "ok", meta["warnings"]
        assert row.messages_received == row.messages_expected == 300 * 10, row.transport
        assert row.messages_duplicated == 0 and row.errors == 0 and row.clients_late == 0
        assert sorted(w["clients"] for w in meta["workers"]) == [150, 150]
        assert row.connections_peak == 300  # the server saw every client at once


@pytest.mark.slow
def test_scale_smoke_2000_clients_per_push_transport(tmp_path: Path) -> None:
    """2,000 clients per push transport at one event per second on two workers (issue 12's smoke test): every
    event to every client once; the server's fan-out and the lean client keep up."""
    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["ws", "sse", "longpoll"]
        """,
        clients=2000,
        rate_hz=1,
        duration_s=3.0,
        warmup_s=1.0,
        ramp_up_s=3.0,
        extra_load="workers = 2",
    )
    assert run.rc == 0, run.stderr
    for row in run.summary.itertuples():
        meta = run.cell_meta(row.cell_id)
        assert row.status == "ok", meta["warnings"]
        assert row.messages_received == row.messages_expected == 2000 * 3, row.transport
        assert row.messages_lost == 0 and row.messages_duplicated == 0 and row.errors == 0, row.transport
        assert row.connections_peak == 2000, row.transport


def test_echo_latency_is_never_below_the_loopback_round_trip(tmp_path: Path) -> None:
    """An echo reply cannot come back before its intended send time: every sample is a real round trip.

    uvloop's timers fire up to ~0.5 ms early, so a send that trusted the timer went out before its intended
    time and a loopback reply (tens of µs) often arrived before it too: latencies < 1 µs, clamped into the
    histogram and counted in ``latency_out_of_range``. Also: no traceback on stderr at teardown.
    """
    from hdrh.histogram import HdrHistogram

    run = run_loadgen(
        tmp_path,
        """
        [matrix]
        transport = ["ws", "poll"]
        scenario = ["echo"]
        """,
        clients=5,
    )
    assert run.rc == 0, run.stderr
    assert "Traceback" not in run.stderr and "never retrieved" not in run.stderr, run.stderr
    histograms = pd.read_parquet(run.folder / "histograms.parquet") if run.folder else pd.DataFrame()
    for transport in ("ws", "poll"):
        row = run.row(transport=transport)
        meta = run.cell_meta(row.cell_id)
        assert row.status == "ok", meta["warnings"]
        assert row.messages_received == row.messages_expected == 5 * 20
        assert meta["latency_out_of_range"] == 0
        encoded = histograms[histograms.cell_id == row.cell_id].encoded.iloc[0]
        lowest_us = HdrHistogram.decode(encoded).get_min_value()
        assert lowest_us >= 10, f"{transport}: an echo came back {lowest_us} µs after its intended send"
        assert row.latency_p50_ms > 0.02


def test_bad_config_and_unwritable_out_are_named_together(tmp_path: Path) -> None:
    """Every problem in one go, one line each: the config's and --out's; exit 2, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = run_loadgen(
        tmp_path, '[matrix]\ntransport = ["carrier-pigeon"]\n', extra_load="workers = 0",
        args=("--out", str(blocker / "results")),
    )  # fmt: skip
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert any("load.workers" in line for line in lines)
    assert any("matrix.transport[0]" in line for line in lines)
    assert any(line.startswith("--out") for line in lines)
    assert len(lines) == 3, lines
    assert blocker.read_text() == "not a folder"
    assert not (tmp_path / "results").exists()
