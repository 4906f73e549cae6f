"""The results folder and the merge of worker results into a summary row, with hand-made inputs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loadgen.client import Plan
from loadgen.conn import ConnRecord
from loadgen.headers import make_profile
from loadgen.metrics import LatencyRecorder, encode_histogram, merge_histograms, new_histogram
from loadgen.results import SUMMARY_COLUMNS, OutputError, RunFolder, summarize, write_run
from loadgen.runner import CellRun
from loadgen.worker import WorkerResult, assign_clients
from pushbench.config import default_config, expand_cells

MS = 1_000_000
REQUIRED = """cell_id, repeat, status, transport, scenario, clients, rate_hz, payload_bytes, burst,
header_profile, request_header_bytes, poll_interval_s, keepalive, ws_compress, duration_s, events_published,
messages_expected, messages_received, messages_lost, messages_duplicated, latency_mean_ms, latency_p50_ms,
latency_p90_ms, latency_p99_ms, latency_max_ms, bytes_down_tcp, bytes_up_tcp, bytes_down_payload, bytes_up_payload,
bytes_down_overhead, bytes_up_overhead, tcp_segments, tcp_segments_down, tcp_segments_up, bytes_tcpip_headers,
connections_opened, connections_peak, time_wait_end, server_cpu_s, server_rss_bytes, loadgen_cpu_pct,
loop_lag_p99_ms, saturated, errors, errors_connect, errors_timeout, errors_http_status, errors_protocol,
errors_disconnect, late_ticks, window_start_ns, window_end_ns"""


def test_summary_columns_start_with_the_documented_order() -> None:
    required = [c.strip() for c in REQUIRED.replace("\n", " ").split(",")]
    assert SUMMARY_COLUMNS[: len(required)] == required
    assert len(set(SUMMARY_COLUMNS)) == len(SUMMARY_COLUMNS)


def test_clients_are_split_round_robin() -> None:
    assert assign_clients(5, 2) == [[0, 2, 4], [1, 3]]
    assert assign_clients(1, 4) == [[0]]  # no empty workers


def fake_run() -> CellRun:
    cell = expand_cells(default_config(["load.transport=ws", "load.clients=2", "load.workers=2"]))[0]
    plan = Plan(
        host="127.0.0.1", port=40000, transport="ws", scenario="feed", clients=2, poll_interval_s=1.0,
        send_interval_s=1.0, longpoll_timeout_s=30.0, payload_bytes=100, seed=1, ws_compress=False, ramp_up_s=0.0,
        profile=make_profile(cell.load), anchor_ns=0, window_start_ns=1_000 * MS, window_end_ns=3_000 * MS,
        stop_ns=4_000 * MS, seq_first=11, seq_last=30,
    )  # fmt: skip
    results = []
    for worker in (0, 1):
        rec = LatencyRecorder()
        for ms in (1, 3):
            rec.record(ms * MS, 0)
        lag = new_histogram()
        lag.record_value(20_000 if worker else 500)  # worker 1's loop woke 20 ms late: saturated
        result = WorkerResult(worker, 1, "uvloop")
        result.latency_encoded, result.latency_count, result.latency_sum_ns, result.latency_max_ns = (
            rec.encode(),
            rec.count,
            rec.sum_ns,
            rec.max_ns,
        )
        result.messages_expected, result.messages_received, result.messages_lost = 20, 19, 1
        result.records = [ConnRecord(worker, 1, 0, None, 3000, 0, 20, 20, 2900, 0, True)]
        result.errors = {"connect": 0, "timeout": 1, "http_status": 0, "protocol": 0, "disconnect": 2}
        result.cpu_s, result.wall_s = 0.2, 2.0
        result.lag_encoded = encode_histogram(lag)
        results.append(result)
    stats0 = {"cpu_user_s": 1.0, "cpu_system_s": 0.5, "connections_peak": 3, "late_ticks": 0,
              "events_published": 10, "deliveries": {"ws": 20}, "echoes": {"http": 0, "ws": 0},
              "connections_accepted": 3, "probe_connections": 1, "rss_bytes": 1}  # fmt: skip
    stats1 = {**stats0, "cpu_user_s": 1.25, "cpu_system_s": 0.5, "late_ticks": 2, "events_published": 30,
              "deliveries": {"ws": 58}, "rss_bytes": 5000}  # fmt: skip
    return CellRun(cell, 1, plan=plan, results=results, stats_start=stats0, stats_end=stats1, time_wait_end=0)


def test_summarize_adds_workers_and_splits_overhead() -> None:
    run = fake_run()
    summary = summarize(run, make_profile(run.cell.load))
    row = summary.row
    assert row["duration_s"] == 2.0
    assert row["events_published"] == 20 and row["messages_expected"] == 40
    assert (row["messages_received"], row["messages_lost"]) == (38, 2)
    assert row["bytes_down_tcp"] == 6000 and row["bytes_down_payload"] == 5800
    assert row["bytes_down_overhead"] == 200  # 6000 - 5800
    assert row["tcp_segments"] == 80 and row["bytes_tcpip_headers"] == 80 * 52
    assert row["errors"] == 6 and row["errors_timeout"] == 2 and row["errors_disconnect"] == 4
    assert row["latency_mean_ms"] == pytest.approx(2.0) and row["latency_max_ms"] == 3.0
    assert row["server_cpu_s"] == pytest.approx(0.25)
    assert row["late_ticks"] == 2 and row["server_deliveries"] == 38 and row["events_published_server"] == 20
    assert row["connections_peak"] == 2  # less the /stats probe's connection
    assert row["loadgen_cpu_pct"] == pytest.approx(10.0)
    assert row["saturated"] is True and row["loop_lag_p99_ms"] == pytest.approx(20.0, rel=1e-3)
    assert any("saturated" in w for w in summary.meta["warnings"])
    assert merge_histograms([summary.histogram]).get_total_count() == 4


def test_results_folder_is_renamed_never_overwritten_and_latest_follows(tmp_path: Path) -> None:
    run = fake_run()
    summary = summarize(run, make_profile(run.cell.load))
    finals = []
    for _ in range(2):
        folder = RunFolder(tmp_path, "unit")
        folder.stamp, folder.name = "20260101T000000Z", "20260101T000000Z-unit"  # the same second twice
        finals.append(
            write_run(
                folder,
                config_source="x.toml",
                overrides=[],
                config={},
                profiles={},
                summaries=[summary],
                started=0.0,
                ended=1.0,
            )
        )
    assert [f.name for f in finals] == ["20260101T000000Z-unit", "20260101T000000Z-unit-2"]
    assert os.readlink(tmp_path / "latest") == "20260101T000000Z-unit-2"
    assert not list(tmp_path.glob(".tmp-*"))
    run_json = json.loads((finals[0] / "run.json").read_text())
    assert run_json["format_version"] == 1 and run_json["cells"][0]["cell_id"] == "c000-r1"
    assert run_json["cells"][0]["load"]["transport"] == "ws"  # the cell's sections as plain JSON objects
    assert run_json["cells"][0]["server"]["allowed_origins"] == []
    with (finals[0] / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["saturated"] == "true" and rows[0]["bytes_down_overhead"] == "200"
    assert pq.read_table(finals[0] / "connections.parquet").num_rows == 2
    assert pq.read_table(finals[0] / "histograms.parquet").column("encoded")[0].as_py() == summary.histogram


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write results"):
        RunFolder(blocker / "results", "unit")


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "unit")
    (folder.tmp / "summary.csv").write_text("partial")
    folder.discard()
    assert list(tmp_path.iterdir()) == []
