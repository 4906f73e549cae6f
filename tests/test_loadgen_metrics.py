"""The load generator's measurement logic, with hand-computed cases and no sockets."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from loadgen.conn import Phase, WindowBook
from loadgen.metrics import (
    LatencyRecorder,
    PayloadLedger,
    SeqTracker,
    align_window,
    backoff_s,
    cpu_percent,
    due_index_range,
    encode_histogram,
    latency_us,
    loop_lag_limit_ms,
    merge_histograms,
    new_histogram,
    next_due_ns,
    overhead_bytes,
    overlap,
    period_ns,
    phase_ns,
    saturation_reasons,
    summarize_latency,
    window_seq_range,
)
from loadgen.worker import LagProbe
from pushbench.units import ws_frame_header_bytes

MS = 1_000_000


def test_period_matches_the_servers_rounding() -> None:
    assert period_ns(10) == 100 * MS
    assert period_ns(3) == 333_333_333  # round(1e9 / 3)


def test_window_starts_half_a_tick_after_a_publication_and_spans_whole_ticks() -> None:
    # Ticks at 1000 + k*100; not before 1234 → the first mid-tick instant at or after it is 1250.
    assert align_window(1000, 100, 1234, 300) == (1250, 1550)
    assert align_window(1000, 100, 1250, 300) == (1250, 1550)  # exactly on a mid-tick instant
    assert align_window(1000, 100, 1251, 340) == (1350, 1650)  # 340 rounds to 3 ticks
    assert align_window(1000, 100, 0, 10) == (50, 150)  # at least one tick, even before the reference


def test_window_seq_range_one_event_per_tick() -> None:
    # seq 7 published at ts 1000 (tick 6); window [1250, 1550) holds ticks at 1300, 1400, 1500 → seqs 10..12.
    assert window_seq_range(7, 1000, 100, 1, 1250, 1550) == (10, 12)


def test_window_seq_range_bursts_share_a_tick() -> None:
    # burst 3: seq 7 is in tick 2 (seqs 7, 8, 9) at ts 1000; ticks 5, 6, 7 → seqs 16..24.
    assert window_seq_range(7, 1000, 100, 3, 1250, 1550) == (16, 24)


def test_window_seq_range_edges() -> None:
    assert window_seq_range(1, 1000, 100, 1, 1000, 1100) == (1, 1)  # start inclusive
    assert window_seq_range(1, 1000, 100, 1, 900, 1000) == (1, 0)  # end exclusive: empty
    first, last = window_seq_range(1, 1000, 100, 1, 1000, 1000)
    assert last < first


def test_phases_are_seeded_spread_and_in_range() -> None:
    interval = 500 * MS
    phases = [phase_ns(1, c, interval) for c in range(200)]
    assert all(0 <= p < interval for p in phases)
    assert phases == [phase_ns(1, c, interval) for c in range(200)]  # reproducible
    assert phases != [phase_ns(2, c, interval) for c in range(200)]  # the seed matters
    assert len(set(phases)) > 190
    # Spread over the whole interval, not bunched: every fifth of it gets some clients.
    assert {p * 5 // interval for p in phases} == {0, 1, 2, 3, 4}


def test_next_due_and_due_index_range() -> None:
    # Schedule anchor 1000, phase 30, interval 100: 1030, 1130, 1230, ...
    assert next_due_ns(1000, 30, 100, 0) == 1030
    assert next_due_ns(1000, 30, 100, 1130) == 1130
    assert next_due_ns(1000, 30, 100, 1131) == 1230
    assert due_index_range(1000, 30, 100, 1100, 1400) == (1, 3)  # 1130, 1230, 1330
    assert due_index_range(1000, 30, 100, 1130, 1330) == (1, 2)  # end exclusive
    first, last = due_index_range(1000, 30, 100, 1131, 1200)
    assert last < first  # nothing due


def test_backoff_is_bounded_and_grows() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        assert 0 <= backoff_s(attempt, rng) <= min(2.0, 0.05 * 2**attempt)
    assert max(backoff_s(10, rng) for _ in range(100)) > 1.0


def test_seq_tracker_counts_received_duplicates_and_lost() -> None:
    tracker = SeqTracker(10, 14)  # expects 10, 11, 12, 13, 14
    assert tracker.expected == 5
    assert [tracker.add(s) for s in (9, 10, 11, 11, 13, 15)] == [False, True, True, False, True, False]
    assert (tracker.received, tracker.duplicated, tracker.lost) == (3, 1, 2)  # 12 and 14 never came


def test_seq_tracker_empty_window() -> None:
    tracker = SeqTracker(5, 4)
    assert (tracker.expected, tracker.lost) == (0, 0)
    assert tracker.add(5) is False


def test_latency_from_intended_time_clamped_to_the_histogram_range() -> None:
    assert latency_us(1_000_000 + 2_500_000, 1_000_000) == 2500
    assert latency_us(100, 200) == 1  # negative (clocks disagree) → lowest value, and counted
    assert latency_us(10**12, 0) == 60_000_000


def test_latency_recorder_exact_mean_and_hdr_percentiles() -> None:
    rec = LatencyRecorder()
    for ms in (1, 2, 3, 4, 100):
        rec.record(ms * MS, 0)
    summary = summarize_latency(rec.histogram, rec.count, rec.sum_ns, rec.max_ns)
    assert summary.count == 5
    assert summary.mean_ms == pytest.approx(22.0)  # (1+2+3+4+100)/5, exact from the sum
    assert summary.max_ms == 100.0
    assert summary.p50_ms == pytest.approx(3.0, rel=1e-3)  # 3 significant digits
    assert summary.p99_ms == pytest.approx(100.0, rel=1e-3)
    rec.record(0, 5 * MS)
    assert rec.out_of_range == 1


def test_latency_recorder_batches_into_the_same_histogram() -> None:
    values = [5, 5, 17, 1_000, 5, 60_000_000, 123_456]
    rec, direct = LatencyRecorder(), new_histogram()
    for i, us in enumerate(values):
        rec.record(us * 1000, 0)
        direct.record_value(us)
        if i == 3:
            assert rec.histogram.get_total_count() == 4  # reading flushes what was recorded so far
    assert rec.histogram.get_total_count() == len(values) == rec.count
    assert rec.encode() == encode_histogram(direct)


def test_histograms_merge_losslessly() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    for i in range(1, 1001):
        (a if i % 2 else b).record(i * 1000, 0)  # 1..1000 µs split between two workers
    merged = merge_histograms([a.encode(), b.encode()])
    single = new_histogram()
    for i in range(1, 1001):
        single.record_value(i)
    assert merged.get_total_count() == 1000
    for p in (50, 90, 99, 100):
        assert merged.get_value_at_percentile(p) == single.get_value_at_percentile(p)
    assert merge_histograms([]).get_total_count() == 0


def test_empty_latency_summary_is_nan() -> None:
    summary = summarize_latency(new_histogram(), 0, 0, 0)
    assert summary.count == 0 and math.isnan(summary.p99_ms) and math.isnan(summary.mean_ms)


def test_overlap() -> None:
    assert overlap(0, 10, 5, 20) == 5
    assert overlap(0, 10, 10, 20) == 0
    assert overlap(12, 15, 10, math.inf) == 3
    assert overlap(0, 10, 2, 4) == 2


def test_ledger_counts_down_payload_by_stream_position() -> None:
    ledger = PayloadLedger()
    ledger.add_down(0, 100)  # before the window: never counted
    ledger.mark_start(150, 0)  # the kernel had received 150 bytes at window start
    ledger.add_down(140, 20)  # straddles the start: 10 bytes inside
    ledger.add_down(200, 50)
    ledger.mark_end(400, 0)
    ledger.add_down(390, 30)  # read after the end mark, straddles it: 10 bytes inside
    ledger.add_down(450, 10)  # wholly after
    assert ledger.down_payload == 10 + 50 + 10


def test_ledger_counts_up_payload_once_the_end_is_known() -> None:
    ledger = PayloadLedger()
    ledger.add_up(0, 40)  # acknowledged before the window
    ledger.add_up(90, 20)  # written before the window, acknowledged across its start (at 100)
    ledger.mark_start(0, 100)
    ledger.add_up(200, 30)
    ledger.add_up(290, 20)  # written, but only 10 bytes acknowledged by the end mark (300)
    ledger.mark_end(0, 300)
    ledger.add_up(300, 50)  # after the window
    assert ledger.up_payload == 10 + 30 + 10


def test_ledger_scales_compressed_frames_to_the_bytes_they_deliver() -> None:
    ledger = PayloadLedger()
    ledger.mark_start(0, 0)
    ledger.add_down(10, 40, payload_bytes=145)  # 40 bytes on the wire inflate to a 145-byte event
    assert ledger.down_payload == 145


def test_overhead_split() -> None:
    assert overhead_bytes(29_800, 29_000) == 800
    assert overhead_bytes(100, 145) == -45  # compression can make overhead negative


@pytest.mark.parametrize(
    ("length", "masked", "header"),
    [
        (0, False, 2),
        (125, False, 2),
        (126, False, 4),
        (65535, False, 4),
        (65536, False, 10),
        (100, True, 6),
        (200, True, 8),
    ],
)
def test_ws_frame_header_bytes_rfc6455(length: int, masked: bool, header: int) -> None:
    assert ws_frame_header_bytes(length, masked) == header


def test_saturation_rule() -> None:
    assert saturation_reasons(80.0, 10.0) == []  # at the limits is not beyond them
    assert len(saturation_reasons(80.1, 1.0)) == 1
    assert len(saturation_reasons(5.0, 10.5)) == 1
    assert len(saturation_reasons(95.0, 50.0)) == 2


def test_loop_lag_limit_is_relative_to_the_latency_it_measures() -> None:
    assert loop_lag_limit_ms(math.nan) == 10.0  # no latency measured: the absolute floor
    assert loop_lag_limit_ms(40.0) == 10.0  # 10 % of 40 ms is 4 ms: the floor is larger
    assert loop_lag_limit_ms(100.0) == 10.0  # exactly at the crossover
    assert loop_lag_limit_ms(174.0) == pytest.approx(17.4)
    assert loop_lag_limit_ms(1500.0) == pytest.approx(150.0)


def test_saturation_rule_with_the_cells_latency() -> None:
    # The SSE cell at 10,000 clients: lag p99 13 ms, latency p99 174 ms: 13 <= 17.4, the client kept up.
    assert saturation_reasons(5.0, 13.0, 174.0) == []
    # The same lag where latencies are small: 10 % of 20 ms is 2 ms, so the 10 ms floor applies and 13 > 10.
    assert saturation_reasons(5.0, 13.0, 20.0) == [
        "event-loop lag p99 13.0 ms > 10.0 ms (the larger of 10 ms and 10% of latency p99, 20.0 ms)"
    ]
    # Latency p99 1.5 s: the limit is 150 ms; 146 ms is within it, 160 ms beyond it.
    assert saturation_reasons(5.0, 146.0, 1500.0) == []
    assert saturation_reasons(5.0, 160.0, 1500.0) == [
        "event-loop lag p99 160.0 ms > 150.0 ms (the larger of 10 ms and 10% of latency p99, 1500.0 ms)"
    ]
    assert saturation_reasons(5.0, 12.0) == [
        "event-loop lag p99 12.0 ms > 10.0 ms (the larger of 10 ms and 10% of latency p99, none measured)"
    ]
    assert saturation_reasons(90.0, 1.0, 500.0) == ["load generator CPU 90% > 80% of a core"]  # CPU rule unchanged
    assert cpu_percent(0.5, 2.0) == 25.0
    assert math.isnan(cpu_percent(1.0, 0.0))


def _probe_max_lag_ms(stall_is_sweep: bool) -> float:
    """Run the lag probe inside a window across one 40 ms loop stall; the largest lag it recorded."""

    async def scenario() -> float:
        book = WindowBook(phase=Phase.IN)
        probe = LagProbe(book)
        probe.start()
        await asyncio.sleep(0.05)
        time.sleep(0.04)  # the loop is blocked: by a TCP_INFO sweep, or by anything else
        if stall_is_sweep:
            book.sweep_end_mono = time.monotonic()  # what WindowBook.start() records when its sweep returns
        await asyncio.sleep(0.1)
        probe.stop()
        assert len(probe.lags_us) >= 10  # a tick every 10 ms
        return float(probe.histogram().get_max_value()) / 1000.0

    return asyncio.run(scenario())


def test_loop_lag_leaves_out_the_window_edge_sweep_but_not_other_stalls() -> None:
    assert _probe_max_lag_ms(stall_is_sweep=False) >= 25
    assert _probe_max_lag_ms(stall_is_sweep=True) < 10


def test_schedule_problem_checks_a_target_against_the_declared_rate_and_burst() -> None:
    from loadgen.metrics import schedule_problem

    tick = 100_000_000
    t0 = 1_764_000_000_000_000_000
    assert schedule_problem([t0, t0 + tick, t0 + 2 * tick], tick, 1) is None
    assert schedule_problem([t0], tick, 1) is None  # one tick: nothing to judge
    # burst 2, first tick cut by the cursor (one event), last caught mid-burst: fine
    assert schedule_problem([t0, t0 + tick, t0 + tick, t0 + 2 * tick], tick, 2) is None
    assert schedule_problem([t0, t0 + 2 * tick], tick, 1) == (
        "the server's events are 200.000 ms apart where feed.rate_hz says 100.000 ms: "
        "set [feed] rate_hz (and burst) to the server's schedule"
    )
    assert schedule_problem([t0, t0 + tick, t0 + 2 * tick], tick, 2) == (
        "the server publishes 1 events per tick where feed.burst says 2"
    )
    assert schedule_problem([t0, t0 + tick + 99_000], tick, 1) is None  # within 0.1 %
