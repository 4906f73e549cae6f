"""The summary's arithmetic (loadgen.summary) on hand-made inputs, no sockets; and summarize leaves the run alone."""

from __future__ import annotations

import copy
import math

import pytest
from test_loadgen_results import fake_run

from loadgen.conn import ConnRecord
from loadgen.headers import make_profile
from loadgen.results import summarize
from loadgen.summary import (
    LimitEvidence,
    MessageCounts,
    Saturation,
    byte_totals,
    cell_status,
    cell_warnings,
    cpu_unit,
    message_counts,
    saturation,
    server_deltas,
    stopped_by,
)
from loadgen.worker import WorkerResult


def record(down: int, up: int, segs_in: int, segs_out: int, payload: int, timestamps: bool = True) -> ConnRecord:
    return ConnRecord(0, 1, 0, None, down, up, segs_in, segs_out, payload, 0, timestamps)


def test_byte_totals_add_connections_and_derive_headers() -> None:
    wire = byte_totals([record(1000, 100, 6, 4, 900), record(500, 50, 3, 2, 450)])
    assert (wire.down_tcp, wire.up_tcp, wire.down_payload, wire.up_payload) == (1500, 150, 1350, 0)
    assert (wire.down_overhead, wire.up_overhead) == (150, 150)
    assert wire.segments == 15 and wire.tcpip_header_bytes == 15 * (20 + 20 + 12)
    no_ts = byte_totals([record(1000, 100, 6, 4, 900), record(500, 50, 3, 2, 450, timestamps=False)])
    assert not no_ts.tcp_timestamps and no_ts.tcpip_header_bytes == 15 * 40
    assert byte_totals([]).tcpip_header_bytes == 0


def worker(clients: int, expected: int, received: int, lost: int, duplicated: int = 0) -> WorkerResult:
    result = WorkerResult(0, clients, "uvloop")
    result.messages_expected, result.messages_received = expected, received
    result.messages_lost, result.messages_duplicated = lost, duplicated
    return result


def test_loss_counts_the_clients_of_a_worker_that_returned_nothing() -> None:
    results = [worker(2, 40, 39, 1, duplicated=3), worker(2, 40, 40, 0)]
    # 7 clients, 4 reported: 3 clients × 20 events of the window are lost, never hidden.
    assert message_counts(results, 7, 20, feed=True) == MessageCounts(40 + 40 + 60, 79, 1 + 60, 3)
    # Echo messages of a missing worker were never scheduled: nothing to add; nor without a plan.
    assert message_counts(results, 7, 20, feed=False) == MessageCounts(80, 79, 1, 3)
    assert message_counts(results, 7, 20, feed=True, planned=False) == MessageCounts(80, 79, 1, 3)


STATS0 = {
    "cpu_user_s": 1.0, "cpu_system_s": 0.5, "late_ticks": 1, "events_published": 10, "connections_accepted": 4,
    "probe_connections": 1, "connections_peak": 5, "rss_bytes": 100,
    "deliveries": {"sse": 7}, "echoes": {"http": 2, "ws": 0},
}  # fmt: skip


def test_server_deltas_subtract_window_start_from_its_end() -> None:
    end = {**STATS0, "cpu_user_s": 1.75, "cpu_system_s": 0.75, "late_ticks": 3, "events_published": 40,
           "connections_accepted": 9, "probe_connections": 2, "connections_peak": 12, "rss_bytes": 900,
           "deliveries": {"sse": 307}, "echoes": {"http": 52, "ws": 0}}  # fmt: skip
    d = server_deltas(STATS0, end, ("deliveries", "sse"))
    assert d.cpu_s == pytest.approx(1.0)  # (1.75 + 0.75) - (1.0 + 0.5)
    assert (d.deliveries, d.late_ticks, d.events_published) == (300, 2, 30)
    assert d.connections_accepted == 4  # 5 accepted, one of them the load generator's probe
    assert d.connections_peak == 11 and d.rss_bytes == 900  # less the probe's own connection
    assert server_deltas(STATS0, end, ("echoes", "http")).deliveries == 50
    missing = server_deltas(None, end, ("deliveries", "sse"))
    assert (missing.cpu_s, missing.deliveries, missing.late_ticks) == (None, None, None)
    assert (missing.connections_peak, missing.rss_bytes) == (11, 900)
    assert server_deltas(STATS0, None, ("deliveries", "sse")).connections_peak is None


def test_the_cpu_unit_is_what_stats_says_else_a_clock_tick() -> None:
    micro = {**STATS0, "cpu_unit_s": 1e-6}
    assert cpu_unit(micro, micro, tick_s=0.01) == 1e-6
    assert cpu_unit(STATS0, STATS0, tick_s=0.01) == 0.01  # an external server that does not say: ticks
    assert cpu_unit(STATS0, micro, tick_s=0.004) == 0.004  # one reading without it: the coarser
    assert cpu_unit({**STATS0, "cpu_unit_s": True}, {**STATS0, "cpu_unit_s": -1}, tick_s=0.01) == 0.01  # not a unit
    assert server_deltas(micro, micro, ("deliveries", "sse")).cpu_unit_s == 1e-6
    assert server_deltas(None, micro, ("deliveries", "sse")).cpu_unit_s is None  # no CPU figure, no unit


def health(cpu: float | None, lag: float | None, wait: float | None = None) -> dict[str, float | None]:
    return {"cpu_pct": cpu, "loop_lag_p99_ms": lag, "runqueue_wait_pct": wait}


def test_saturation_is_judged_by_the_busiest_worker_and_says_why() -> None:
    calm = saturation([health(20.0, 1.0), health(30.0, 2.0)])
    assert (calm.busiest_cpu_pct, calm.worst_lag_p99_ms, calm.saturated, calm.warning()) == (30.0, 2.0, False, None)
    busy = saturation([health(20.0, 1.0), health(91.0, 12.5, wait=15.0)])
    assert busy.saturated and len(busy.reasons) == 2
    warning = busy.warning()
    assert warning is not None and warning.startswith("saturated: load generator CPU 91% > 80% of a core")
    assert "waited for a free CPU 15% of the window" in warning
    assert "waited" not in (saturation([health(91.0, 1.0, wait=5.0)]).warning() or "")
    nobody = saturation([health(None, None)])
    assert math.isnan(nobody.busiest_cpu_pct) and not nobody.saturated


def test_saturation_judges_loop_lag_against_the_cells_latency_p99() -> None:
    workers = [health(5.0, 9.0), health(6.0, 13.0)]
    assert saturation(workers).saturated  # no latency known: 13 ms > the 10 ms floor
    assert not saturation(workers, latency_p99_ms=174.0).saturated  # 13 ms <= 17.4 ms
    small = saturation(workers, latency_p99_ms=30.0)  # 10 % of 30 ms is 3 ms: the floor, 13 ms > 10 ms
    assert small.reasons == (
        "event-loop lag p99 13.0 ms > 10.0 ms (the larger of 10 ms and 10% of latency p99, 30.0 ms)",
    )


def test_status_and_warnings_in_order() -> None:
    assert cell_status("ok", 0) == "ok"
    assert cell_status("ok", 3) == "incomplete"
    assert cell_status("failed", 3) == "failed"
    kept_up = Saturation(10.0, 1.0, (), None)
    lossy = MessageCounts(100, 98, 2, 0)
    assert cell_warnings(["from the runner"], "ok", kept_up, lossy, 0, 0) == [
        "from the runner",
        "2 of 100 messages were not received",
    ]
    late = cell_warnings([], "incomplete", Saturation(95.0, 1.0, ("cpu",), None), lossy, 3, 4)
    assert late[0] == "saturated: cpu (this cell measured the client)"
    assert late[1].startswith("TCP_INFO could not be read 3 times")
    assert late[2].startswith("4 clients were not subscribed when the window started")
    assert len(late) == 3  # an incomplete cell's loss is explained by its status, not warned about again


def test_summarize_reads_the_run_and_never_changes_it() -> None:
    run = fake_run()
    run.results[0].counter_errors = 2  # the summary makes the cell incomplete and says why
    before = (copy.deepcopy(run.warnings), run.status)
    summary = summarize(run, make_profile(run.cell.load))
    assert (run.warnings, run.status) == before
    assert summary.row["status"] == "incomplete" and summary.meta["status"] == "incomplete"
    assert any(w.startswith("TCP_INFO could not be read 2 times") for w in summary.meta["warnings"])


def test_server_limits_from_stats() -> None:
    start = {**STATS0, "rejected": {"max_connections": 7}, "nofile_limit": 20_000, "fds_at_start": 12}
    end = {**start, "rejected": {"max_connections": 30, "http_404": 1}}
    own = server_deltas(start, end, ("deliveries", "sse"))
    assert (own.max_connections_503, own.nofile_limit, own.fds_at_start) == (30, 20_000, 12)  # the ramp-up's too
    assert server_deltas(start, end, ("deliveries", "sse"), external=True).max_connections_503 == 23  # 30 - 7
    assert server_deltas(STATS0, STATS0, ("deliveries", "sse")).max_connections_503 == 0  # no refusal counted yet
    # The namespace's full-accept-queue drops: since the server listened (own server), inside the window (external).
    start = {**STATS0, "listen_overflows_at_start": 100, "listen_overflows": 104, "listen_backlog": 4096}
    end = {**start, "listen_overflows": 110}
    assert server_deltas(start, end, ("deliveries", "sse")).listen_overflows == 10
    assert server_deltas(start, end, ("deliveries", "sse"), external=True).listen_overflows == 6
    assert server_deltas(start, {**end, "listen_overflows": None}, ("deliveries", "sse")).listen_overflows is None
    assert server_deltas(STATS0, STATS0, ("deliveries", "sse")).listen_overflows is None  # an older server


def test_stopped_by_names_each_limit_in_one_line() -> None:
    assert stopped_by(LimitEvidence()) == ""  # nothing stopped the cell
    assert stopped_by(LimitEvidence(server_cpu_pct=94.9, server_connections_peak=100, server_nofile_limit=1024)) == ""
    # 19,990 connections + 10 descriptors held before the first one = 20,000: the server's limit.
    server_fd = LimitEvidence(server_connections_peak=19_990, server_fds_at_start=10, server_nofile_limit=20_000)
    assert stopped_by(server_fd) == "server fd limit: RLIMIT_NOFILE 20,000 reached with 19,990 connections open"
    assert (
        stopped_by(LimitEvidence(server_connections_peak=19_989, server_fds_at_start=10, server_nofile_limit=20_000))
        == ""
    )
    assert stopped_by(LimitEvidence(client_fd_errors=12, client_nofile_limit=20_000)) == (
        "client fd limit: RLIMIT_NOFILE 20,000 per worker, two per connection (12 connects failed with EMFILE)"
    )
    assert stopped_by(LimitEvidence(port_errors=3, ports_per_address=28_232, source_addresses=2)) == (
        "ephemeral ports: 28,232 per source address × 2 (3 connects failed with EADDRNOTAVAIL)"
    )
    assert stopped_by(LimitEvidence(max_connections_503=250, max_connections=5_000)) == (
        "server max_connections 5,000: 250 connections answered 503"
    )
    gib = 1024**3
    assert stopped_by(LimitEvidence(memory_available_bytes=gib, memory_total_bytes=24 * gib)) == (
        "memory: 1,024 MiB of 24,576 MiB available"  # 4.2 % < 5 %
    )
    assert stopped_by(LimitEvidence(memory_available_bytes=2 * gib, memory_total_bytes=24 * gib)) == ""  # 8.3 %
    assert stopped_by(LimitEvidence(server_cpu_pct=97.6)) == "server CPU at 98 % of its one core"
    assert stopped_by(LimitEvidence(listen_overflows=0, listen_backlog=4096)) == ""
    assert stopped_by(LimitEvidence(listen_overflows=1_234, listen_backlog=4096)) == (
        "listen queue of 4,096 (server.listen_backlog, net.core.somaxconn): 1,234 connection attempts dropped on a "
        "full accept queue (ListenOverflows, the server's network namespace)"
    )
    assert stopped_by(LimitEvidence(connect_timeouts=40, connect_timeout_s=10.0)) == "40 connect timeouts (10 s)"
    both = LimitEvidence(server_cpu_pct=99.0, saturation=("load generator CPU 90% > 80% of a core",))
    assert stopped_by(both) == (
        "server CPU at 99 % of its one core; load generator saturated: load generator CPU 90% > 80% of a core"
    )


def test_summary_row_carries_stopped_by() -> None:
    run = fake_run()  # worker 1's loop lagged 20 ms against a latency p99 of 3 ms: saturated
    row = summarize(run, make_profile(run.cell.load)).row
    assert row["stopped_by"].startswith("load generator saturated: event-loop lag p99 20.0 ms > 10.0 ms")
    assert row["source_addresses"] == 1
