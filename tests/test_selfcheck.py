"""The self-check's arithmetic (``loadgen.selfcheck``), checked by hand; the benchmark itself is ``make bench-client``."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from loadgen.selfcheck import Sample, median_costs, median_ratios, process_cpu_reader, ratio, spread, us_per_op
from tests.conftest import ROOT, ServerProcess, get_stats, timeout


def sample(test: str, client: str, cpu_s: float, ops: int, round_: int) -> Sample:
    return Sample(test, client, cpu_s, ops, 5.0, round=round_)


def test_cpu_per_operation_and_ratio() -> None:
    assert us_per_op(0.05, 10_000) == 5.0  # 50 ms of CPU over 10,000 messages
    assert math.isnan(us_per_op(0.05, 0))
    assert ratio(3.0, 4.0) == 0.75
    assert math.isnan(ratio(1.0, 0.0))


def test_ratios_are_taken_within_a_round_then_the_median_over_rounds() -> None:
    # Round 1: ours 8 µs, node 10 µs -> 0.8; round 2: 9 / 6 -> 1.5; round 3: 7 / 7 -> 1.0. Median 1.0, range 0.8-1.5.
    # (The median of the µs figures, 8 and 7, would give 1.14: not what was measured side by side.)
    samples = [
        sample("ws", "pushbench", 0.08, 10_000, 1),
        sample("ws", "node ws", 0.10, 10_000, 1),
        sample("ws", "pushbench", 0.09, 10_000, 2),
        sample("ws", "node ws", 0.06, 10_000, 2),
        sample("ws", "pushbench", 0.07, 10_000, 3),
        sample("ws", "node ws", 0.07, 10_000, 3),
    ]
    ((name, value),) = median_ratios(samples)
    assert name == "pushbench ws / node ws (ws)"
    assert (round(value.median, 9), round(value.low, 9), round(value.high, 9)) == (1.0, 0.8, 1.5)
    assert value.text() == "1.00 (0.80-1.50)"
    costs = {(t, c): v for t, c, v in median_costs(samples)}
    assert round(costs["ws", "pushbench"].median, 9) == 8.0 and round(costs["ws", "node ws"].median, 9) == 7.0


def test_sse_is_compared_with_the_websocket_peers_and_a_missing_peer_leaves_no_ratio() -> None:
    samples = [
        sample("sse", "pushbench", 0.09, 10_000, 1),
        sample("ws", "node ws", 0.10, 10_000, 1),
        sample("poll", "pushbench", 0.5, 10_000, 1),
    ]
    assert [(n, round(v.median, 9)) for n, v in median_ratios(samples)] == [("pushbench sse / node ws (ws)", 0.9)]


def test_spread_ignores_rounds_that_measured_nothing() -> None:
    assert spread([2.0, math.nan, 4.0]).median == 3.0
    assert math.isnan(spread([math.nan]).median)


def test_a_process_cpu_is_read_to_well_under_a_clock_tick_and_agrees_with_proc_stat() -> None:
    # A real child that burns about 0.3 s of CPU, then waits: the kernel's clock of that process (the self-check's
    # reading) and /proc/<pid>/stat's whole 10-ms ticks (psutil) count the same CPU, the clock to the nanosecond.
    burn = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint(1, flush=True)\nsys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"1\n"
            cpu_s = process_cpu_reader(child.pid)
            ticks = sum(psutil.Process(child.pid).cpu_times()[:2])
            reading = cpu_s()
            assert reading >= 0.3
            assert abs(reading - ticks) <= 0.02  # within a tick each way
            assert cpu_s() == reading  # the child is blocked on its stdin: its clock stands still
        finally:
            child.kill()


def test_the_bare_uvloop_floor_polls_each_client_on_its_own_timer(server_process: Callable[..., ServerProcess]) -> None:
    """The floor row's poller against a real server: 4 clients at 25 polls/s each make 100 requests a second."""
    server = server_process("--set", "feed.rate_hz=1")
    argv = [sys.executable, "-m", "loadgen.selfcheck", "--run-bare-poller", "127.0.0.1", str(server.port), "4", "25"]
    with subprocess.Popen(argv, cwd=ROOT) as poller:
        try:
            deadline = time.monotonic() + timeout(15)
            while (before := get_stats(server.url)["requests"].get("poll", 0)) < 8:
                assert poller.poll() is None and time.monotonic() < deadline, "the floor poller never polled"
                time.sleep(0.05)
            t0 = time.monotonic()
            time.sleep(1.0)
            after = get_stats(server.url)["requests"]["poll"]
            elapsed = time.monotonic() - t0
            assert 0.9 * 100 * elapsed <= after - before <= 100 * elapsed + 4, (after - before, elapsed)
        finally:
            poller.send_signal(signal.SIGTERM)
            assert poller.wait(timeout(5)) == 0
