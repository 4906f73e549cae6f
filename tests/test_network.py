"""Cells over an emulated network path (``make test-network``; needs root, ip/tc/iptables and the delay line).

One load-generator run carries the cells that the checks below read (loopback and 50-ms WebSocket, HTTP echo with
and without keep-alive, 1 % loss, a cell whose server is killed); a load generator killed with SIGKILL leaves
namespaces that the next run removes, one stopped with SIGTERM removes its own. (The quick checks of one long poll
and one poll with and without keep-alive across a path are in test_netpath.py, in the default suite.)
Expectations come from ``analysis.theory``, never from constants.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, timeout

from analysis import theory
from loadgen import netpath
from loadgen.netpath import PathSpec
from pushbench import netns

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(
        bool(netpath.path_requirements([PathSpec(rtt_ms=1)])),
        reason="; ".join(netpath.path_requirements([PathSpec(rtt_ms=1)])),
    ),
]

RTT_MS = 50.0
TOLERANCE = 0.10

CONFIG = """
[feed]
rate_hz = 20
[load]
duration_s = 2
warmup_s = 0.5
ramp_up_s = 0.3
clients = 10
send_interval_s = 0.25
[[sweep]]                 # c000 loopback, c001 50 ms
transport = ["ws"]
rtt_ms = [0, 50]
[[sweep]]                 # c002 keep-alive, c003 a connection per request
transport = ["poll"]
scenario = ["echo"]
rtt_ms = [50]
keepalive = [true, false]
[[sweep]]                 # c004: ~4,000 packets each way, ~1 % of them dropped; warm-up outlasts a lost SYN (1 s)
transport = ["ws"]
rtt_ms = [10]
loss_pct = [1]
rate_hz = [100]
clients = [20]
warmup_s = [2.5]
[[sweep]]                 # c005: the server is killed half a second into the window
transport = ["sse"]
rtt_ms = [20]
fault_kill_at_s = [0.5]
"""


def ours(pid: int) -> list[str]:
    return [ns for ns in netns.list_namespaces() if netns.owner_pid(ns) == pid]


@pytest.fixture(scope="module")
def network_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the cells once in a subprocess; its rows by cell id, run.json, and the namespaces left after it."""
    tmp = tmp_path_factory.mktemp("network")
    config = tmp / "network-test.toml"
    config.write_text(CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(tmp / "results")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = proc.communicate(timeout=timeout(120))
    assert proc.returncode == 0, stderr[-2000:]
    folder = tmp / "results" / "latest"
    with (folder / "summary.csv").open() as f:
        rows = {r["cell_id"]: r for r in csv.DictReader(f)}
    run = json.loads((folder / "run.json").read_text())
    return {"rows": rows, "run": run, "pid": proc.pid, "folder": folder}


def ms(row: dict[str, str], key: str) -> float:
    return float(row[key])


def test_websocket_p50_is_loopback_plus_half_the_round_trip(network_run: dict[str, Any]) -> None:
    loopback, far = network_run["rows"]["c000-r1"], network_run["rows"]["c001-r1"]
    assert loopback["path_mechanism"] == "loopback" and far["rtt_ms"] == "50.0"
    expected = theory.push_latency_ms(RTT_MS) + ms(loopback, "latency_p50_ms")
    assert abs(ms(far, "latency_p50_ms") - expected) <= TOLERANCE * expected, (far["latency_p50_ms"], expected)


def test_the_path_was_measured_before_the_cell(network_run: dict[str, Any]) -> None:
    far = network_run["rows"]["c001-r1"]
    assert RTT_MS <= ms(far, "path_rtt_ms_p50") <= RTT_MS + netpath.rtt_tolerance_ms(RTT_MS)
    assert ms(far, "path_connect_ms_p50") >= RTT_MS  # a SYN round trip: the delay line is not a proxy
    cell = next(c for c in network_run["run"]["cells"] if c["cell_id"] == "c001-r1")
    assert cell["network"]["mechanism"] == far["path_mechanism"] != "loopback"
    assert cell["network"]["path_samples"] >= 30
    if far["path_mechanism"].startswith(netpath.MECHANISM_DELAYLINE):
        assert int(far["delayline_packets"]) > 0
        assert float(far["delayline_us_per_packet"]) > 0


def test_an_http_exchange_without_keepalive_costs_one_more_round_trip(network_run: dict[str, Any]) -> None:
    kept, fresh = network_run["rows"]["c002-r1"], network_run["rows"]["c003-r1"]
    assert (kept["keepalive"], fresh["keepalive"]) == ("true", "false")
    assert int(fresh["connections_opened"]) >= int(fresh["messages_received"]) > 0
    expected = theory.http_exchange_ms(RTT_MS, keepalive=False) - theory.http_exchange_ms(RTT_MS, keepalive=True)
    extra = ms(fresh, "latency_p50_ms") - ms(kept, "latency_p50_ms")
    assert abs(extra - expected) <= TOLERANCE * expected, (extra, expected)


def test_nothing_is_lost_without_loss(network_run: dict[str, Any]) -> None:
    for cid in ("c001-r1", "c002-r1", "c003-r1"):
        row = network_run["rows"][cid]
        assert row["status"] == "ok", (cid, row)
        assert int(row["messages_lost"]) == 0 and int(row["messages_received"]) == int(row["messages_expected"])
        assert row["tcp_retrans_segs_down"] == row["tcp_retrans_segs_up"] == "0"


def test_packet_loss_is_repaired_by_tcp_and_shows_in_the_segment_counts(network_run: dict[str, Any]) -> None:
    row = network_run["rows"]["c004-r1"]
    assert row["loss_pct"] == "1.0" and row["status"] == "ok"
    assert int(row["messages_lost"]) == 0 and int(row["messages_received"]) == int(row["messages_expected"])
    # Each event is a segment the server sends: ~4,000 of them, so about 40 are dropped and sent again.
    assert int(row["tcp_retrans_segs_down"]) > 0
    if row["path_mechanism"].startswith(netpath.MECHANISM_DELAYLINE):
        assert int(row["delayline_dropped"]) > 0


def test_no_namespace_outlives_its_cells_even_when_a_server_is_killed(network_run: dict[str, Any]) -> None:
    killed = network_run["rows"]["c005-r1"]
    assert killed["status"] == "incomplete"
    assert ours(network_run["pid"]) == []


def test_the_report_draws_the_network_chart(network_run: dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(network_run["folder"])],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout(60),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    charts = network_run["folder"] / "charts"
    assert (charts / "network.png").stat().st_size > 10_000
    assert "7. Network" in (network_run["folder"] / "report.html").read_text()


def test_a_killed_load_generator_leaves_namespaces_that_the_next_run_removes(tmp_path: Path) -> None:
    config = tmp_path / "killed.toml"
    config.write_text('[network]\nrtt_ms = 20\n[load]\ntransport = "ws"\nduration_s = 30\nclients = 2\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(tmp_path / "results")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout(20)
    while len(ours(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    left = ours(proc.pid)
    assert len(left) == 2, "the cell never built its namespaces"
    time.sleep(1.0)  # server and workers are up inside them
    inside = [pid for ns in left for pid in netns.pids(ns)]
    assert inside
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(ours(proc.pid)) == sorted(left)  # SIGKILL: nobody could clean up
    # The next run removes them (and what still runs inside) before it starts, and says so.
    again = subprocess.run(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--set", "load.duration_s=0.5",
         "--set", "load.warmup_s=0", "--out", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout(60),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removed network namespaces left by pushbench runs that died" in again.stderr
    assert all(ns in again.stderr for ns in left)
    assert ours(proc.pid) == []
    time.sleep(0.2)
    assert all(netns.exited(pid) for pid in inside)


def test_sigterm_mid_cell_removes_the_namespaces(tmp_path: Path) -> None:
    config = tmp_path / "term.toml"
    config.write_text('[network]\nrtt_ms = 20\n[load]\ntransport = "sse"\nduration_s = 30\nclients = 2\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(tmp_path / "results")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout(20)
    while len(ours(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ours(proc.pid)) == 2
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=timeout(30))
    assert proc.returncode == 130, stderr[-2000:]
    assert ours(proc.pid) == []
