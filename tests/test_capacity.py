"""Capacity, the server's fan-out, the CPU tick bound and the classic table's measured columns, checked against
arithmetic done by hand on small hand-written summary.csv files (the report on a real run: tests/test_analysis.py)."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from analysis.__main__ import main, parse_capacity_p99
from analysis.capacity import (
    Bounded,
    Size,
    capacities,
    capacity_of,
    cpu_figures,
    fanout_met,
    latency_threshold_ms,
    size_failure,
)
from analysis.classic import classic_rows, measured_mbps
from analysis.fmt import fmt, fmt_bound
from analysis.metrics import (
    bytes_per_second,
    cpu_ms_per_thousand_events_below,
    cpu_reads_zero,
    cpu_resolution_s,
    cpu_us_per_delivery,
    deliveries_per_cpu_s,
    memory_per_connection_bytes,
    pooled_cpu_slack_s,
    pooled_fanout,
)
from analysis.model import Analysis, analyse
from analysis.results import SUMMARY_COLUMNS, ResultsError, Run, attach_cells, read_summary
from analysis.stacks import with_stack_columns
from analysis.transports import Transports

# --- the formulas ------------------------------------------------------------------------------------------


def test_cpu_that_reads_zero_ticks_is_known_only_as_a_bound() -> None:
    # 10-ms ticks (100 per second), user and system each floored to whole ticks: a 0 reading means under 2 ticks,
    # 20 ms; 4-ms ticks: 8 ms; getrusage's microseconds: 2 µs.
    assert cpu_resolution_s(0.01) == 0.02 and cpu_resolution_s() == 0.02
    assert cpu_resolution_s(0.004) == 0.008
    assert cpu_resolution_s(1e-6) == 2e-6
    assert cpu_reads_zero(0.0) and cpu_reads_zero(0.01 - 0.01 + 1e-17)
    assert not cpu_reads_zero(0.01) and not cpu_reads_zero(math.nan)
    # In microseconds, 3 µs is resolved; 0.4 µs is a float-rounded 0.
    assert not cpu_reads_zero(3e-6, 1e-6) and cpu_reads_zero(4e-7, 1e-6)
    assert math.isnan(cpu_ms_per_thousand_events_below(0.003, 400, 1e-6))
    # 400 events under 2 µs: under 0.002 ms / 0.4 = 0.005 ms per 1,000 events.
    assert cpu_ms_per_thousand_events_below(0.0, 400, 1e-6) == pytest.approx(0.005)
    # 400 events under 20 ms: under 20 ms / 0.4 thousand events = 50 ms per 1,000 events.
    assert cpu_ms_per_thousand_events_below(0.0, 400) == pytest.approx(50.0)
    assert math.isnan(cpu_ms_per_thousand_events_below(0.01, 400))  # resolved: no bound
    assert fmt_bound(0.0, 50.0) == "< 50"
    assert fmt_bound(3.25, math.nan) == "3.25"
    assert fmt_bound(100_000, 2_000, ">") == "> 2,000"


def test_cpu_per_delivery_and_fan_out() -> None:
    # 50,000 deliveries for 0.5 s of CPU: 10 µs each, 100,000 per CPU-second.
    assert cpu_us_per_delivery(0.5, 50_000) == pytest.approx(10.0)
    assert deliveries_per_cpu_s(50_000, 0.5) == pytest.approx(100_000)
    assert math.isnan(deliveries_per_cpu_s(50_000, 0.0))
    assert bytes_per_second(1_000, 4.0) == 250.0


def test_memory_per_connection_is_marginal_against_the_smallest_size() -> None:
    # 40,000,000 B at 100 clients, 48,000,000 B at 1,000: 8,000,000 B for 900 more connections.
    assert memory_per_connection_bytes(48e6, 1000, 40e6, 100) == (pytest.approx(8e6 / 900), True)
    # At the smallest size: RSS ÷ clients, with the process's baseline in it.
    assert memory_per_connection_bytes(40e6, 100, 40e6, 100) == (pytest.approx(400_000), False)


def test_the_pooled_cpu_is_known_to_two_steps_per_window() -> None:
    # 10-ms ticks: 2 ticks = 0.02 s per window; four windows: 0.08 s. 4-ms ticks: 0.008 s each.
    assert pooled_cpu_slack_s([0.01]) == pytest.approx(0.02)
    assert pooled_cpu_slack_s([0.01] * 4) == pytest.approx(0.08)
    assert pooled_cpu_slack_s([0.004] * 3) == pytest.approx(0.024)
    assert pooled_cpu_slack_s([]) == 0
    # getrusage's microseconds: four windows, 8 µs; one window of ticks among three of µs: 0.02 + 0.000006 s.
    assert pooled_cpu_slack_s([1e-6] * 4) == pytest.approx(8e-6)
    assert pooled_cpu_slack_s([0.01, 1e-6, 1e-6, 1e-6]) == pytest.approx(0.020006)


def test_the_fan_out_is_pooled_over_repeats_with_the_range_the_cpu_ticks_allow() -> None:
    # Two windows: 50,000 deliveries in 0.50 s and 40,000 in 0.40 s of CPU, read in 10-ms ticks (100 per second).
    # Pooled: 90,000 / 0.90 s = 100,000 per CPU-s. Each window's CPU is within 2 ticks (0.02 s) either way, so the
    # total is within 0.04 s: 90,000 / 0.94 = 95,744.7 and 90,000 / 0.86 = 104,651.2.
    figure, low, high = pooled_fanout([50_000, 40_000], [0.50, 0.40], [0.01, 0.01])
    assert (figure, low, high) == (
        pytest.approx(100_000),
        pytest.approx(95_744.68, abs=0.01),
        pytest.approx(104_651.16, abs=0.01),
    )
    # One window of 0.02 s: the CPU could have been 0, so there is no upper bound.
    assert pooled_fanout([1_000], [0.02], [0.01]) == (pytest.approx(50_000), pytest.approx(25_000), math.inf)
    assert all(math.isnan(v) for v in pooled_fanout([], [], []))


def test_the_fan_out_read_in_microseconds_is_known_to_eight_microseconds_over_four_windows() -> None:
    # The session-3 WebSocket case: four 5-s windows of 50,000 deliveries, 2.01 s of CPU in all (99,502 per CPU-s).
    # In 10-ms ticks the total is within 4 × 0.02 = 0.08 s: 200,000 / 2.09 = 95,693.8 and 200,000 / 1.93 = 103,626.9.
    # In microseconds it is within 4 × 2 µs = 0.000008 s: 200,000 / 2.010008 = 99,501.6 and / 2.009992 = 99,502.4.
    cpus = [0.50, 0.51, 0.49, 0.51]
    ticks = pooled_fanout([50_000] * 4, cpus, [0.01] * 4)
    assert ticks == (
        pytest.approx(99_502.49, abs=0.01),
        pytest.approx(95_693.78, abs=0.01),
        pytest.approx(103_626.94, abs=0.01),
    )
    micro = pooled_fanout([50_000] * 4, cpus, [1e-6] * 4)
    assert micro == (
        pytest.approx(99_502.49, abs=0.01),
        pytest.approx(99_502.09, abs=0.01),
        pytest.approx(99_502.89, abs=0.01),
    )


def test_cpu_figures_pool_the_repeats_and_turn_into_bounds_when_the_total_read_zero() -> None:
    rows = [
        {"server_cpu_s": 0.5, "server_deliveries": "50000", "server_cpu_unit_s": 0.01},
        {"server_cpu_s": 0.0, "server_deliveries": "1000", "server_cpu_unit_s": 0.01},  # under 2 ticks: pooled
    ]
    cpu, fanout = cpu_figures(rows)
    # 51,000 deliveries in 0.5 s (± 0.04 s): 9.80 µs each (9.02-10.59), 102,000 per CPU-s (94,444-110,870).
    assert (cpu.value, cpu.low, cpu.high) == (
        pytest.approx(9.8039, abs=1e-4),
        pytest.approx(9.0196, abs=1e-4),
        pytest.approx(10.5882, abs=1e-4),
    )
    assert (fanout.value, fanout.low, fanout.high) == (
        pytest.approx(102_000),
        pytest.approx(94_444.44, abs=0.01),
        pytest.approx(110_869.57, abs=0.01),
    )
    assert (fanout.text(), fanout.range_text()) == ("102,000", "94,444–110,870")
    # Every repeat read 0 ticks: under 2 ticks each (0.04 s for two), so < 0.04 s / 2,000 = 20 µs, > 50,000 per s.
    cpu, fanout = cpu_figures([{"server_cpu_s": 0.0, "server_deliveries": "1000", "server_cpu_unit_s": 0.01}] * 2)
    assert cpu == Bounded(pytest.approx(20.0), "<") and fanout == Bounded(pytest.approx(50_000), ">")
    assert fanout.range_text() == ""
    cpu, fanout = cpu_figures(rows[:1])
    assert (cpu.text(), fanout.text()) == ("10", "100,000")
    assert cpu_figures([{"server_cpu_s": 0.5, "server_cpu_unit_s": 0.01}])[0].text() == "–"  # no server_deliveries
    # Read in microseconds: 51,000 deliveries in 0.50001 s (± 2 × 2 µs): 101,997.96 per CPU-s (51,000 / 0.500014 =
    # 101,997.14 to 51,000 / 0.500006 = 101,998.78); a repeat that read 0 µs is pooled the same way.
    micro = [{**r, "server_cpu_unit_s": 1e-6} for r in ({**rows[0], "server_cpu_s": 0.50001}, rows[1])]
    _, fanout = cpu_figures(micro)
    assert (fanout.value, fanout.low, fanout.high) == (
        pytest.approx(101_997.96, abs=0.01),
        pytest.approx(101_997.14, abs=0.01),
        pytest.approx(101_998.78, abs=0.01),
    )
    assert fanout.range_text() == "101,997–101,999"


def test_fan_out_target() -> None:
    assert fanout_met(Bounded(125_000)) is True
    assert fanout_met(Bounded(99_000)) is False
    assert fanout_met(Bounded(200_000, ">")) is True  # at least that
    assert fanout_met(Bounded(50_000, ">")) is None  # at least 50,000: could be either
    assert fanout_met(Bounded(math.nan)) is None
    # With the CPU ticks' range: met only when all of it is at or above the target, not met when all is below.
    assert fanout_met(Bounded(108_000, "", 104_000, 112_000)) is True
    assert fanout_met(Bounded(102_000, "", 98_000, 106_000)) is None
    assert fanout_met(Bounded(95_000, "", 91_000, 99_000)) is False


# --- judging one size and walking up the sizes ----------------------------------------------------------


def repeat(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell_id": "c001-r1", "status": "ok", "latency_p99_ms": 120.0, "messages_lost": 0.0,
        "messages_expected": 50_000.0, "saturated": False, "loadgen_cpu_pct": 40.0, "loop_lag_p99_ms": 2.0,
    }  # fmt: skip
    row.update(changes)
    return row


def test_a_size_passes_with_p99_at_the_threshold_nothing_lost_and_a_client_that_kept_up() -> None:
    assert size_failure([repeat(latency_p99_ms=1000.0)], 1000.0, {}) == ""


def test_every_failing_condition_is_named_in_one_line() -> None:
    rows = [
        repeat(latency_p99_ms=900.0),
        repeat(cell_id="c001-r2", latency_p99_ms=1500.0, messages_lost=88.0, saturated=True),
    ]
    warnings = {"c001-r2": ["saturated: event-loop lag p99 146.0 ms > 10 ms (this cell measured the client)"]}
    assert size_failure(rows, 1000.0, warnings) == (
        "p99 1,500 ms > 1,000 ms; 88 of 100,000 messages lost; load generator saturated (event-loop lag p99 146.0 ms "
        "> 10 ms)"
    )
    # Without the load generator's sentence, the two figures it judges by.
    assert size_failure([repeat(saturated=True, loadgen_cpu_pct=97.0)], 1000.0, {}) == (
        "load generator saturated (busiest worker 97 % CPU, event-loop lag p99 2 ms)"
    )


def test_the_limit_the_scale_helper_names_comes_first_and_failed_repeats_count() -> None:
    rows = [
        repeat(stopped_by="ephemeral ports: 28,232 per source address", messages_lost=5.0),
        repeat(cell_id="c001-r2", status="failed", latency_p99_ms=math.nan),
    ]
    assert size_failure(rows, 1000.0, {}) == (
        "ephemeral ports: 28,232 per source address; 1 of 2 repeats failed; 5 of 50,000 messages lost"
    )
    assert size_failure([repeat(stopped_by="")], 1000.0, {}) == ""  # empty: nothing stopped the cell
    # stopped_by names the saturation with its reason: said once, not again from the saturated column.
    named = "load generator saturated: event-loop lag p99 12.7 ms > 12.1 ms"
    assert size_failure([repeat(stopped_by=named, saturated=True)], 1000.0, {}) == named
    both = "server CPU at 99 % of its one core; " + named
    assert size_failure([repeat(stopped_by=both, saturated=True)], 1000.0, {}) == both
    assert size_failure([repeat(latency_p99_ms=math.nan)], 1000.0, {}) == "no event delivered"


def size(clients: float, failure: str = "") -> Size:
    return Size(clients, f"c{clients:g}", 1, 10.0, 1000.0, failure, Bounded(1.0), Bounded(1.0), 0.0, 0.0)


def test_capacity_is_the_last_size_passed_before_the_first_failure() -> None:
    sizes = [size(100), size(1000), size(3000, "p99 1,200 ms > 1,000 ms"), size(10_000)]
    capacity, stopped = capacity_of(sizes)
    assert capacity is sizes[1] and stopped is sizes[2]
    both = [size(100), size(1000)]
    assert capacity_of(both) == (both[1], None)
    assert capacity_of([size(100, "3 of 500 messages lost"), size(1000)])[0] is None


# --- a hand-written sweep, through the analysis ------------------------------------------------------------

# Three push/poll transports at 100, 1,000 and 10,000 clients, one event per second, a 5-s window.
# (transport, clients) -> the figures that differ: p99 ms, lost, saturated, server CPU s, RSS, stopped_by.
SWEEP: dict[tuple[str, int], dict[str, Any]] = {
    ("ws", 100): {"p99": 50.0, "cpu": 0.01, "rss": 40_000_000},
    ("ws", 1000): {"p99": 120.0, "cpu": 0.05, "rss": 48_000_000},
    ("ws", 10_000): {"p99": 1500.0, "lost": 88, "saturated": True, "cpu": 0.5, "rss": 120_000_000},
    ("sse", 100): {"p99": 40.0, "cpu": 0.0, "rss": 40_000_000},
    ("sse", 1000): {"p99": 90.0, "cpu": 0.04, "rss": 46_000_000},
    ("sse", 10_000): {"p99": 800.0, "cpu": 0.4, "rss": 100_000_000},
    ("poll", 100): {"p99": 990.0, "cpu": 0.1, "rss": 40_000_000},
    ("poll", 1000): {"p99": 995.0, "cpu": 1.0, "rss": 50_000_000, "stopped_by": "RLIMIT_NOFILE 1024 reached"},
}
EVENTS = 5  # per client in the window
OVERHEAD_DOWN = {"ws": 2, "sse": 40, "poll": 200}  # bytes per event per client; the baseline (100) also 1 more


def sweep_row(index: int, transport: str, clients: int, figures: dict[str, Any]) -> dict[str, str]:
    lost = figures.get("lost", 0)
    expected = EVENTS * clients
    received = expected - lost
    overhead = OVERHEAD_DOWN[transport] + (1 if clients == 100 else 0)
    down_payload, down_overhead = 100 * received, overhead * received
    row = {c: "0" for c in SUMMARY_COLUMNS}
    row.update(
        cell_id=f"c{index:03d}-r1", repeat="1", status="ok", transport=transport, scenario="feed",
        clients=str(clients), rate_hz="1", payload_bytes="100", burst="1", header_profile="minimal",
        poll_interval_s="1", keepalive="true", ws_compress="false", duration_s="5", events_published=str(EVENTS),
        messages_expected=str(expected), messages_received=str(received), messages_lost=str(lost),
        latency_p99_ms=str(figures["p99"]), latency_p50_ms=str(figures["p99"] / 2), bytes_down_tcp=str(down_payload + down_overhead),
        bytes_down_payload=str(down_payload), bytes_down_overhead=str(down_overhead), tcp_segments=str(2 * received),
        tcp_segments_down=str(received), tcp_segments_up=str(received), bytes_tcpip_headers=str(52 * 2 * received),
        server_cpu_s=str(figures["cpu"]), server_rss_bytes=str(figures["rss"]), connections_peak=str(clients),
        saturated="true" if figures.get("saturated") else "false", loadgen_cpu_pct="50", loop_lag_p99_ms="2",
    )  # fmt: skip
    row["server_deliveries"] = str(received)
    row["stopped_by"] = figures.get("stopped_by", "")
    return row


def sweep_run(tmp_path: Path, rows: list[dict[str, str]] | None = None) -> Run:
    rows = rows or [sweep_row(i, t, n, f) for i, ((t, n), f) in enumerate(SWEEP.items())]
    path = tmp_path / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta: dict[str, Any] = {
        "config": {"load": {"clients": 100}, "report": {"capacity_p99_s": 1.0}},
        "machine": {"clock_ticks_per_s": 100},
        "cells": [
            {"cell_id": r["cell_id"], "index": i, "repeat": 1, "status": "ok", "warnings": []}
            for i, r in enumerate(rows)
        ],
    }
    if len(rows) > 2:
        meta["cells"][2]["warnings"] = [
            "saturated: event-loop lag p99 146.0 ms > 10 ms (this cell measured the client)"
        ]
    summary = with_stack_columns(read_summary(path))
    attach_cells(summary, meta, tmp_path / "run.json", path)
    return Run(tmp_path, meta, summary, {}, Transports())


@pytest.fixture
def sweep(tmp_path: Path) -> Analysis:
    return analyse(sweep_run(tmp_path))


def test_capacity_of_a_hand_written_sweep(sweep: Analysis) -> None:
    caps = {c.transport: c for c in capacities(sweep)}
    assert list(caps) == ["poll", "sse", "ws"]  # the registry's order
    ws, sse, poll = caps["ws"], caps["sse"], caps["poll"]
    assert ws.capacity is not None and ws.capacity.clients == 1000
    assert ws.stopped_text() == (
        "at 10,000 clients: p99 1,500 ms > 1,000 ms; 88 of 50,000 messages lost; load generator saturated "
        "(event-loop lag p99 146.0 ms > 10 ms)"
    )
    # At 1,000 clients: 0.05 s of CPU for 5,000 deliveries = 10 µs, 100,000 per CPU-second; memory
    # (48,000,000 − 40,000,000) ÷ 900 = 8,888.9 B; wire (100 + 2 + 104) B × 5,000 events ÷ 5 s = 206,000 B/s.
    assert ws.capacity.cpu_us_per_delivery.text() == "10"
    assert ws.capacity.deliveries_per_cpu_s.text() == "100,000"
    assert (ws.memory_per_connection_bytes, ws.memory_marginal) == (pytest.approx(8_000_000 / 900), True)
    assert ws.capacity.wire_bytes_per_s == pytest.approx(206_000)
    assert sse.capacity is not None and sse.capacity.clients == 10_000 and sse.stopped is None
    assert sse.stopped_text() == "not reached up to 10,000 clients"
    # SSE at 100: the CPU read 0 ticks (under 20 ms for 500 deliveries): < 40 µs, > 25,000 per CPU-second.
    assert (sse.sizes[0].cpu_us_per_delivery.text(), sse.sizes[0].deliveries_per_cpu_s.text()) == ("< 40", "> 25,000")
    assert fanout_met(sse.sizes[2].deliveries_per_cpu_s) is True  # 50,000 ÷ 0.4 s = 125,000
    assert poll.capacity is not None and poll.capacity.clients == 100
    assert poll.stopped_text() == "at 1,000 clients: RLIMIT_NOFILE 1024 reached"
    assert (poll.memory_per_connection_bytes, poll.memory_marginal) == (pytest.approx(400_000), False)


def test_the_first_screen_says_where_each_transport_stopped(sweep: Analysis) -> None:
    from analysis.report import capacity_summary_html

    text = html.unescape(re.sub(r"<[^>]+>", "", capacity_summary_html(sweep)))
    assert text == (
        "Capacity (p99 at or under 1 s, plus the poll interval for polling, nothing lost, load generator unsaturated): "
        "short polling 100 clients (at 1,000 "
        "clients: RLIMIT_NOFILE 1024 reached); SSE 10,000 clients (not reached up to 10,000 clients); WebSocket 1,000 "
        "clients (at 10,000 clients: p99 1,500 ms > 1,000 ms; 88 of 50,000 messages lost; load generator saturated "
        "(event-loop lag p99 146.0 ms > 10 ms)). Details."
    )


def test_the_threshold_comes_from_run_json_or_the_override(tmp_path: Path) -> None:
    run = sweep_run(tmp_path)
    caps = {c.transport: c for c in capacities(analyse(run, capacity_p99_s=0.1))}
    assert caps["ws"].capacity is not None and caps["ws"].capacity.clients == 100
    assert caps["ws"].stopped_text() == "at 1,000 clients: p99 120 ms > 100 ms"
    # Short polling (1 poll/s) is judged against 0.1 s + 1 s: 990 ms passes at 100 clients.
    assert caps["poll"].capacity_text() == "100"
    assert caps["poll"].sizes[0].threshold_ms == pytest.approx(1100.0)
    run.meta["config"]["report"]["capacity_p99_s"] = 2.0
    assert analyse(run).capacity_p99_s == 2.0
    del run.meta["config"]["report"]  # a run written before [report]: 1 s
    assert analyse(run).capacity_p99_s == 1.0
    run.meta["config"]["report"] = {"capacity_p99_s": "fast"}
    with pytest.raises(ResultsError, match=r"run\.json: key config\.report\.capacity_p99_s is 'fast'"):
        analyse(run)


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "inf"])
def test_a_bad_capacity_threshold_on_the_command_line_exits_2_naming_the_key(
    raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError):
        parse_capacity_p99(raw)
    assert main([str(tmp_path), "--capacity-p99", raw]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --capacity-p99 {raw!r}: report.capacity_p99_s must be a number of seconds > 0, e.g. --capacity-p99 0.5"
    )
    assert parse_capacity_p99("0.25") == 0.25 and parse_capacity_p99(None) is None


def test_the_classic_table_shows_what_1000_clients_measured_beside_the_extrapolation(sweep: Analysis) -> None:
    rows = {r.transport: r for r in classic_rows(sweep.cells, sweep.base, sweep.transports)}
    ws = rows["ws"]
    # Baseline (100 clients): 3 B of overhead per event, 1 event/s → 3 B/s per client → 1,000 × 3 × 8 / 2**20.
    assert ws.overhead_mbps[0] == pytest.approx(3 * 1000 * 8 / 2**20)
    # Measured at 1,000 clients: 2 B per event → 2 × 1,000 × 8 / 2**20 Mbps; at 10,000:
    # 2 B for each of the 49,912 events received (88 lost) in 5 s.
    assert ws.measured_overhead_mbps[0] == pytest.approx(2 * 1000 * 8 / 2**20)
    assert ws.measured_overhead_mbps[1] == pytest.approx(2 * 49_912 / 5 * 8 / 2**20)
    assert math.isnan(ws.measured_overhead_mbps[2])
    assert ws.measured_doubts == ("", "load generator saturated, 88 messages lost", "")
    assert math.isnan(rows["poll"].measured_overhead_mbps[1])  # poll never reached 10,000
    assert measured_mbps(2.0, 1000) == pytest.approx(0.0152587890625)
    assert fmt(ws.measured_overhead_mbps[0]) == "0.01526"


def test_the_report_config_key_is_written_into_run_json_and_validated() -> None:
    from pushbench.config import ConfigError, build_config

    cfg = build_config({"report": {"capacity_p99_s": 0.5}}, "x.toml")
    assert cfg.report.capacity_p99_s == 0.5 and cfg.to_dict()["report"] == {"capacity_p99_s": 0.5}
    assert build_config({}, "x.toml").to_dict()["report"] == {"capacity_p99_s": 1.0}
    for bad, problem in ((0, "must be > 0, got 0.0"), ("1s", "must be a number, got '1s' (str)")):
        with pytest.raises(ConfigError) as err:
            build_config({"report": {"capacity_p99_s": bad}}, "x.toml")
        assert str(err.value) == f"x.toml: report.capacity_p99_s: {problem}"
    with pytest.raises(ConfigError, match="capacity_p99_s: cannot vary between cells"):
        build_config({"matrix": {"capacity_p99_s": [0.5, 1.0]}}, "x.toml")
    json.dumps(cfg.to_dict())  # run.json holds it as plain data


def test_each_stack_has_its_own_capacity(tmp_path: Path) -> None:
    # WebSocket over h1 and over h1-tls, 100 and 1,000 clients; over TLS 1,000 clients lose 3 events.
    rows = []
    for stack in ("h1-tls", "h1"):
        for clients in (100, 1000):
            lost = 3 if (stack, clients) == ("h1-tls", 1000) else 0
            row = sweep_row(len(rows), "ws", clients, {"p99": 80.0, "cpu": 0.1, "rss": 4e7, "lost": lost})
            row["stack"] = stack
            rows.append(row)
    caps = capacities(analyse(sweep_run(tmp_path, rows)))
    assert [(c.stack, c.stack_label) for c in caps] == [("h1", "HTTP/1.1"), ("h1-tls", "HTTP/1.1 + TLS 1.3")]
    assert caps[0].stopped_text() == "not reached up to 1,000 clients"
    assert caps[1].capacity_text() == "100"
    assert caps[1].stopped_text() == "at 1,000 clients: 3 of 5,000 messages lost"


def test_compare_prints_a_cpu_that_read_zero_as_a_bound(sweep: Analysis) -> None:
    from analysis.compare import format_comparison

    lines = [line for line in format_comparison(sweep, sweep).splitlines() if "server CPU per 1,000" in line]
    assert len(lines) == len(SWEEP)
    # SSE at 100 clients read 0 ticks: under 20 ms for 500 events, under 40 ms per 1,000; no ratio of two bounds.
    bounded = [line for line in lines if "<" in line]
    assert bounded == ["  server CPU per 1,000 delivered events [ms]: A < 40  B < 40  ratio –  known only as a bound"]
    assert "1 known only as bounds (server CPU that read 0 clock ticks)" in format_comparison(sweep, sweep)


def test_a_polling_transport_is_judged_over_its_poll_interval(tmp_path: Path) -> None:
    # Hand-computed: 1 s threshold + a 1 s poll interval = 2,000 ms for short polling; push transports get 1,000 ms.
    assert latency_threshold_ms(1.0, True, 1.0) == 2000.0
    assert latency_threshold_ms(1.0, True, 0.25) == 1250.0
    assert latency_threshold_ms(1.0, False, 1.0) == 1000.0
    assert latency_threshold_ms(0.5, True, math.nan) == 500.0  # no interval recorded: the plain threshold
    figures = {100: 1500.0, 1000: 1990.0, 10_000: 2100.0}  # p99 of short polling at 1 poll/s
    rows = [
        sweep_row(i, "poll", n, {"p99": p99, "cpu": 0.1, "rss": 40_000_000})
        for i, (n, p99) in enumerate(figures.items())
    ]
    (poll,) = capacities(analyse(sweep_run(tmp_path, rows)))
    assert poll.capacity is not None and poll.capacity.clients == 1000
    assert poll.stopped_text() == "at 10,000 clients: p99 2,100 ms > 2,000 ms"
