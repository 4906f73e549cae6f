"""The emulated path's pure parts by hand, then one real path (root): built, measured against its config, removed."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import ROOT, timeout

from analysis import theory
from loadgen import netpath
from loadgen.netpath import EmulatedPath, PathSpec
from pushbench import netns
from pushbench.config import default_config
from pushbench.delayline import queue_counters
from servers.app import make_app
from servers.state import STATE

needs_root = pytest.mark.skipif(bool(netns.missing_requirements()), reason="; ".join(netns.missing_requirements()))
needs_delay_line = pytest.mark.skipif(
    bool(netpath.path_requirements([PathSpec(rtt_ms=1)])),
    reason="; ".join(netpath.path_requirements([PathSpec(rtt_ms=1)])),
)


def test_mechanism_follows_the_kernel_and_the_config() -> None:
    assert netpath.mechanism(PathSpec(), kernel_has_netem=False) == "loopback"
    assert netpath.mechanism(PathSpec(rtt_ms=50), kernel_has_netem=False) == "nfqueue-delayline"
    assert netpath.mechanism(PathSpec(loss_pct=1), kernel_has_netem=True) == "netem"
    assert netpath.mechanism(PathSpec(rtt_ms=50, bandwidth_mbit=10), kernel_has_netem=False) == "nfqueue-delayline+tbf"
    assert netpath.mechanism(PathSpec(bandwidth_mbit=10), kernel_has_netem=False) == "tbf"


def test_tbf_queue_holds_100_ms_at_the_rate_and_bursts_at_least_two_frames() -> None:
    args = netpath.tbf_args("pb0", 10)
    # 10 Mbit/s = 1,250,000 B/s: 1 ms = 1250 B < two 1514-B frames; 100 ms = 125,000 B.
    assert args[args.index("rate") + 1] == "10000kbit"
    assert args[args.index("burst") + 1] == "3028"
    assert args[args.index("limit") + 1] == "125000"
    slow = netpath.tbf_args("pb0", 0.5, parent="1:1")  # 62,500 B/s: 100 ms = 6250 B < ten frames
    assert slow[slow.index("limit") + 1] == "15140"
    assert slow[5:7] == ["parent", "1:1"]


def test_netem_delays_one_way_and_drops_the_loss() -> None:
    assert netpath.netem_args("pb0", 25, 0)[-2:] == ["delay", "25000us"]
    assert netpath.netem_args("pb0", 25, 1.5)[-4:] == ["delay", "25000us", "loss", "1.5%"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert netpath.percentile(values, 50) == 50
    assert netpath.percentile(values, 99) == 99
    assert netpath.percentile([3.0, 1.0, 2.0], 50) == 2
    assert math.isnan(netpath.percentile([], 50))


def test_path_warning_allows_ten_percent_or_two_ms() -> None:
    assert netpath.rtt_tolerance_ms(50) == 5
    assert netpath.rtt_tolerance_ms(10) == 2
    assert netpath.path_warning(50, 54.9) is None
    assert netpath.path_warning(10, 11.9) is None
    warning = netpath.path_warning(50, 56)
    assert warning is not None and "+6.00 ms" in warning
    assert netpath.path_warning(200, 170) is not None
    assert netpath.path_warning(0, 1.5) is None  # a veth pair's own round trip is far below 2 ms
    assert netpath.path_warning(50, math.nan) is not None


def test_probe_summary_pools_connects_and_requests() -> None:
    probe = netpath.PathProbe(connect_ms=[50.0, 51.0], request_ms=[50.5, 52.0, 60.0])
    summary = probe.summary(50)
    assert summary["path_rtt_ms_p50"] == 51.0
    assert summary["path_rtt_ms_p99"] == 60.0
    assert summary["path_connect_ms_p50"] == 50.0
    assert summary["path_samples"] == 5


def test_snmp_tcp_counters_are_parsed_by_name() -> None:
    text = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Tcp: RtoAlgorithm RtoMin ActiveOpens OutSegs RetransSegs InErrs\nTcp: 1 200 -1 1234 7 0\n"
    )
    assert netpath.parse_snmp_tcp(text) == {
        "RtoAlgorithm": 1,
        "RtoMin": 200,
        "ActiveOpens": -1,
        "OutSegs": 1234,
        "RetransSegs": 7,
        "InErrs": 0,
    }
    assert netpath.parse_snmp_tcp("") == {}


def test_nfnetlink_queue_counters() -> None:
    text = "    0  12345     3 2 65531     5     2      987  1\n    1  1 0 2 65531 0 0 0 1\n"
    assert queue_counters(text, 0) == (5, 2)
    assert queue_counters(text, 7) == (0, 0)


def _stats(packets: int, cpu_s: float, late_p99_us: float = 100.0, dropped: int = 0) -> dict[str, float]:
    return {
        "packets": packets, "dropped_loss": dropped, "cpu_s": cpu_s, "late_us_p50": 50.0, "late_us_p99": late_p99_us,
        "late_us_max": late_p99_us * 2, "held_peak": 9, "queue_dropped": 0, "user_dropped": 0,
    }  # fmt: skip


def test_delay_line_window_counts_packets_and_cpu_between_two_answers() -> None:
    start = [_stats(100, 1.0), _stats(50, 2.0)]
    end = [_stats(1100, 1.5, dropped=4), _stats(1050, 2.1)]
    window = netpath.delay_line_window(start, end, wall_s=2.0)  # type: ignore[arg-type]
    assert window["delayline_packets"] == 2000
    assert window["delayline_dropped"] == 4
    assert window["delayline_cpu_pct"] == pytest.approx(25.0)  # the busiest line: 0.5 s of CPU in 2 s
    assert window["delayline_us_per_packet"] == pytest.approx(300.0)  # 0.6 s for 2000 packets
    assert window["delayline_late_p99_ms"] == pytest.approx(0.1)
    assert netpath.delay_line_saturation(window, one_way_ms=25) == []
    assert netpath.delay_line_window([], [], 2.0) == {}
    assert "delayline_error" in netpath.delay_line_window([_stats(1, 0)], [None], 2.0)  # type: ignore[list-item]


def test_a_delay_line_that_falls_behind_saturates_the_cell() -> None:
    busy = netpath.delay_line_window([_stats(0, 0)], [_stats(10, 0.9, late_p99_us=3000)], 1.0)  # type: ignore[list-item]
    reasons = netpath.delay_line_saturation(busy, one_way_ms=25)  # late limit: max(1 ms, 2.5 ms)
    assert len(reasons) == 2
    assert "CPU 90%" in reasons[0]
    assert "3.0 ms late" in reasons[1]
    assert netpath.delay_line_saturation(busy, one_way_ms=50) == ["delay line CPU 90% > 80% of a core"]


@needs_root
@needs_delay_line
def test_an_emulated_path_measures_what_it_was_asked_for_and_leaves_nothing() -> None:
    spec = PathSpec(rtt_ms=20, bandwidth_mbit=50)
    with EmulatedPath(spec) as path:
        made = {path.server_ns, path.client_ns}
        assert made <= set(netns.list_namespaces())
        summary = netpath.measure_path(path, probes=2, connections=2, requests=2).summary(spec.rtt_ms)
        assert summary["path_probe_failures"] == 0
        assert summary["path_samples"] == 12
        assert netpath.path_warning(spec.rtt_ms, summary["path_rtt_ms_p50"]) is None, summary
        assert summary["path_rtt_ms_p50"] >= spec.rtt_ms  # the delay line never releases early
        if path.mechanism.startswith(netpath.MECHANISM_DELAYLINE):
            stats = path.delay_line_stats()
            assert all(s is not None and s["packets"] > 0 and s["dropped_loss"] == 0 for s in stats)
        pids = [line.pid for line in path.delay_lines]
    assert not made & set(netns.list_namespaces())
    assert not any(netns.pid_alive(pid) for pid in pids)


# --- the real server app across a real path, by hand (quick: about a second each) ---------------------------

RTT_MS = 50.0
TOLERANCE = 0.10


@asynccontextmanager
async def app_in_server_namespace(path: EmulatedPath, *overrides: str) -> AsyncIterator[tuple[web.Application, Any]]:
    """The real aiohttp app, listening on a socket made inside the path's server namespace."""
    app = make_app(default_config(overrides))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = netns.socket_in(path.server_ns)
    sock.bind((path.server_ip, 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield app, sock.getsockname()
    finally:
        await runner.cleanup()


def read_response(reader: Any) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status line, headers, body)."""
    status = reader.readline()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers.get("content-length", "0")))


def in_thread_in(ns: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` in a thread that entered ``ns`` (the client side), return its result or raise its error."""
    out: list[Any] = []

    def run() -> None:
        try:
            netns.enter(ns)
            out.append(work())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout(20))
    if not out:
        raise TimeoutError("the client thread did not finish")
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


@needs_root
@needs_delay_line
def test_a_long_poll_sees_the_second_of_two_close_events_after_three_transits() -> None:
    """Two events 10 ms apart: the poll that carried the first must come back before the second can travel."""
    gap_ms = 10.0
    with EmulatedPath(PathSpec(rtt_ms=RTT_MS)) as path:
        published, answers = asyncio.run(_long_poll_two_events(path, gap_ms))
    seqs = [seq for seqs, _ in answers for seq in seqs]
    assert seqs[:2] == [1, 2], answers
    arrival = {seq: at for seqs, at in answers for seq in seqs}
    first_ms = (arrival[1] - published[0]) * 1000
    second_ms = (arrival[2] - published[1]) * 1000
    expected_first = theory.longpoll_event_latency_ms(RTT_MS, math.inf)  # a poll was waiting: one transit
    expected_second = theory.longpoll_event_latency_ms(RTT_MS, gap_ms)  # 3 × one-way after the first: 65 ms
    assert abs(first_ms - expected_first) <= TOLERANCE * expected_first, (first_ms, expected_first)
    assert abs(second_ms - expected_second) <= TOLERANCE * expected_second, (second_ms, expected_second)


async def _long_poll_two_events(path: EmulatedPath, gap_ms: float) -> tuple[list[float], list[tuple[list[int], float]]]:
    answers: list[tuple[list[int], float]] = []
    published: list[float] = []
    async with app_in_server_namespace(path, "feed.rate_hz=0.001") as (app, target):  # one tick, then silence
        feed = app[STATE].feed
        cursor = feed.events_published

        def poll_twice() -> None:
            with socket.create_connection(target, timeout=timeout(5)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = sock.makefile("rb")
                after = cursor
                while len(answers) < 2:
                    sock.sendall(f"GET /longpoll?after={after} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    status, _, body = read_response(reader)
                    answers.append(([e["seq"] - cursor for e in json.loads(body)["events"]], time.perf_counter()))
                    assert status.startswith(b"HTTP/1.1 200"), status
                    after = json.loads(body)["cursor"]

        client = asyncio.get_running_loop().run_in_executor(None, in_thread_in, path.client_ns, poll_twice)
        await asyncio.sleep(4 * RTT_MS / 1000)  # the first long poll is held at the server by now
        for i in range(2):
            if i:
                await asyncio.sleep(gap_ms / 1000)
            published.append(time.perf_counter())
            feed.publish_tick(time.time_ns())
        await asyncio.wait_for(client, timeout(10))
    return published, answers


@needs_root
@needs_delay_line
def test_a_poll_without_keepalive_costs_one_more_round_trip() -> None:
    with EmulatedPath(PathSpec(rtt_ms=RTT_MS)) as path:
        kept = asyncio.run(_poll_times(path, keepalive=True))
        fresh = asyncio.run(_poll_times(path, keepalive=False))
    expected = theory.http_exchange_ms(RTT_MS, keepalive=False) - theory.http_exchange_ms(RTT_MS, keepalive=True)
    extra = statistics.median(fresh) - statistics.median(kept)
    assert abs(extra - expected) <= TOLERANCE * expected, (kept, fresh, expected)
    assert abs(statistics.median(kept) - theory.http_exchange_ms(RTT_MS, keepalive=True)) <= TOLERANCE * RTT_MS


async def _poll_times(path: EmulatedPath, keepalive: bool, polls: int = 5) -> list[float]:
    """Milliseconds from sending a poll (connecting first when the server closed the last one) to its answer."""
    async with app_in_server_namespace(path, f"server.keepalive={str(keepalive).lower()}") as (_, target):

        def polls_timed() -> list[float]:
            times: list[float] = []
            sock: socket.socket | None = None
            try:
                for _ in range(polls + 1):  # the first, on a connection opened earlier, is not counted
                    t0 = time.perf_counter()
                    if sock is None:
                        sock = socket.create_connection(target, timeout=timeout(5))
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        reader = sock.makefile("rb")
                    sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
                    status, headers, _ = read_response(reader)
                    assert status.startswith(b"HTTP/1.1 200"), status
                    times.append((time.perf_counter() - t0) * 1000)
                    if headers.get("connection", "").lower() == "close":
                        reader.close()
                        sock.close()
                        sock = None
            finally:
                if sock is not None:
                    sock.close()
            return times[1:] if keepalive else times

        return await asyncio.get_running_loop().run_in_executor(None, in_thread_in, path.client_ns, polls_timed)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_without_root_an_emulated_config_stops_before_anything_with_one_line() -> None:
    where = Path(tempfile.mkdtemp(prefix="pushbench-unprivileged-"))
    where.chmod(0o777)  # nobody may write here: the only problem left is the missing privilege
    out = where / "results"
    code = (
        "import os, sys\n"
        "from loadgen.__main__ import main\n"
        "os.setegid(65534); os.seteuid(65534)\n"  # nobody, after the imports (the venv may live under /root)
        f"sys.exit(main(['--config', 'configs/quick.toml', '--set', 'network.rtt_ms=50', '--out', {str(out)!r}]))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout(30)
        )
        assert done.stderr.strip().splitlines() == [
            "configs/quick.toml: network: network namespaces need root (run as root or with sudo)"
        ]
        assert done.returncode == 2
        assert not out.exists()
    finally:
        shutil.rmtree(where, ignore_errors=True)
