"""A cell's summary as arithmetic: totals, loss, server deltas, saturation, status and warnings.

Nothing here touches a socket, a clock or a file: each function takes what the workers and the server's
``/stats`` reported and returns numbers or sentences, so ``loadgen.results.summarize`` only composes them into
the summary.csv row and the run.json cell (and never changes the run it summarises).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.clock import clock_warning
from loadgen.conn import ERROR_KINDS, ConnRecord
from loadgen.metrics import cpu_percent, merge_histograms, overhead_bytes, saturation_reasons
from loadgen.wire import TCP_TIMESTAMP_OPTION_BYTES, tcpip_header_bytes
from loadgen.worker import WorkerResult

# A worker that waited for a CPU this much of the window was delayed by a busy machine, not by its own work.
RUNQUEUE_WAIT_WARN_PCT = 10.0


@dataclass(frozen=True)
class ByteTotals:
    """The TCP_INFO byte and segment counts of every client connection in the window, summed."""

    down_tcp: int = 0
    up_tcp: int = 0
    down_payload: int = 0
    up_payload: int = 0
    segs_down: int = 0
    segs_up: int = 0
    tcp_timestamps: bool = True  # every connection negotiated TCP timestamps (12 option bytes per segment)

    @property
    def down_overhead(self) -> int:
        return overhead_bytes(self.down_tcp, self.down_payload)

    @property
    def up_overhead(self) -> int:
        return overhead_bytes(self.up_tcp, self.up_payload)

    @property
    def segments(self) -> int:
        return self.segs_down + self.segs_up

    @property
    def tcpip_header_bytes(self) -> int:
        """Derived, not counted: segments × (IP + TCP + options) headers (``loadgen.wire``)."""
        options = TCP_TIMESTAMP_OPTION_BYTES if self.tcp_timestamps else 0
        return tcpip_header_bytes(self.segments, tcp_option_bytes=options)


def byte_totals(records: Sequence[ConnRecord]) -> ByteTotals:
    return ByteTotals(
        down_tcp=sum(r.bytes_down_tcp for r in records),
        up_tcp=sum(r.bytes_up_tcp for r in records),
        down_payload=sum(r.bytes_down_payload for r in records),
        up_payload=sum(r.bytes_up_payload for r in records),
        segs_down=sum(r.segs_in for r in records),
        segs_up=sum(r.segs_out for r in records),
        tcp_timestamps=all(r.timestamps for r in records),
    )


@dataclass(frozen=True)
class MessageCounts:
    expected: int
    received: int
    lost: int
    duplicated: int


def message_counts(
    results: Sequence[WorkerResult], clients: int, events_in_window: int, feed: bool, planned: bool = True
) -> MessageCounts:
    """Messages by seq over every worker. The clients of a worker that returned nothing count every event of the
    window as lost (feed cells; echo messages were never scheduled), so a dead worker never hides a loss."""
    expected = sum(r.messages_expected for r in results)
    lost = sum(r.messages_lost for r in results)
    missing_clients = clients - sum(r.clients for r in results)
    if missing_clients > 0 and planned and feed:
        expected += missing_clients * events_in_window
        lost += missing_clients * events_in_window
    return MessageCounts(
        expected=expected,
        received=sum(r.messages_received for r in results),
        lost=lost,
        duplicated=sum(r.messages_duplicated for r in results),
    )


def error_counts(results: Sequence[WorkerResult]) -> dict[str, int]:
    """Client errors by kind, every kind present (0 when none)."""
    return {k: sum(r.errors.get(k, 0) for r in results) for k in ERROR_KINDS}


@dataclass(frozen=True)
class ServerDeltas:
    """What the server counted inside the window: /stats at its end minus /stats at its start."""

    cpu_s: float | None = None
    cpu_unit_s: float | None = None  # the step of each of the server's user and system CPU counters (cpu_unit)
    deliveries: int | None = None  # events (or echoes) handed to this cell's transport
    late_ticks: int | None = None
    events_published: int | None = None
    connections_accepted: int | None = None  # less the load generator's own /stats probe connections
    connections_peak: int | None = None  # over the server's life, less the probe's one connection
    rss_bytes: int | None = None  # at the window's end
    # Connections refused with 503 under server.max_connections: over the server's life (the ramp-up included),
    # or inside the window for an external server, which may have served other cells.
    max_connections_503: int | None = None
    nofile_limit: int | None = None  # the server's RLIMIT_NOFILE and the descriptors it held before any connection
    fds_at_start: int | None = None
    # Connection attempts dropped on a full accept queue in the server's network namespace: since the server started
    # listening (the ramp-up included), or inside the window for an external server.
    listen_overflows: int | None = None
    listen_backlog: int | None = None


def counter_since(start: Mapping[str, Any], end: Mapping[str, Any], key: str, baseline_key: str | None) -> int | None:
    """``end[key]`` less its baseline: ``end[baseline_key]`` (a value the server noted when it started), or
    ``start[key]`` when ``baseline_key`` is None. None when a value is missing or null."""
    base = end.get(baseline_key) if baseline_key is not None else start.get(key)
    now = end.get(key)
    return now - base if now is not None and base is not None else None


# Linux's USER_HZ: the unit of /proc/<pid>/stat and times(), what a server's CPU counters are taken to count when its
# /stats does not say (cpu_unit_s).
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_unit(start: Mapping[str, Any], end: Mapping[str, Any], tick_s: float = CLOCK_TICK_S) -> float:
    """The step in which a window's server CPU was counted: the /stats ``cpu_unit_s`` of its two readings (the
    coarser if they differ), a clock tick for a reading without it (an external server's may count ticks)."""

    def unit(stats: Mapping[str, Any]) -> float:
        value = stats.get("cpu_unit_s")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        return tick_s

    return max(unit(start), unit(end))


def server_deltas(
    start: Mapping[str, Any] | None, end: Mapping[str, Any] | None, counter: tuple[str, str], external: bool = False
) -> ServerDeltas:
    """The window's server figures; ``counter`` names the delivery counter: ("deliveries", transport) or
    ("echoes", echo key). Unknown where either snapshot is missing. An ``external`` server's connection peak
    spans every cell since it started, so it is not this cell's figure."""
    s0, s1 = start or {}, end or {}
    peak = s1["connections_peak"] - 1 if "connections_peak" in s1 and not external else None
    refused = s1.get("rejected", {}).get("max_connections", 0) if s1 else None
    if refused is not None and external:
        refused -= s0.get("rejected", {}).get("max_connections", 0)
    limits = {
        "max_connections_503": refused,
        "nofile_limit": s1.get("nofile_limit"),
        "fds_at_start": s1.get("fds_at_start"),
        "listen_overflows": counter_since(
            s0, s1, "listen_overflows", None if external else "listen_overflows_at_start"
        ),
        "listen_backlog": s1.get("listen_backlog"),
    }
    if not (s0 and s1):
        return ServerDeltas(connections_peak=peak, rss_bytes=s1.get("rss_bytes"), **limits)

    def delta(key: str) -> Any:
        return s1[key] - s0[key] if key in s0 and key in s1 else None

    group, key = counter
    accepted, probes = delta("connections_accepted"), delta("probe_connections")
    return ServerDeltas(
        cpu_s=(s1["cpu_user_s"] + s1["cpu_system_s"]) - (s0["cpu_user_s"] + s0["cpu_system_s"]),
        cpu_unit_s=cpu_unit(s0, s1),
        deliveries=s1[group][key] - s0[group][key],
        late_ticks=delta("late_ticks"),
        events_published=delta("events_published"),
        connections_accepted=accepted - probes if accepted is not None and probes is not None else None,
        connections_peak=peak,
        rss_bytes=s1.get("rss_bytes"),
        **limits,
    )


def worker_health(results: Iterable[WorkerResult]) -> list[dict[str, Any]]:
    """Per worker: its clients, loop, CPU % of the window, % of the window waiting for a CPU, loop lag p99 (ms)."""
    return [
        {
            "worker": r.worker,
            "clients": r.clients,
            "loop": r.loop,
            "cpu_pct": cpu_percent(r.cpu_s, r.wall_s) if r.wall_s > 0 else None,
            "runqueue_wait_pct": (
                cpu_percent(r.runqueue_wait_s, r.wall_s) if r.wall_s > 0 and r.runqueue_wait_s is not None else None
            ),
            "loop_lag_p99_ms": (
                merge_histograms([r.lag_encoded]).get_value_at_percentile(99) / 1000.0 if r.lag_encoded else None
            ),
            "host": r.host,
            "clock": r.clock,
        }
        for r in results
    ]


def host_label(host: Mapping[str, Any]) -> str:
    """A load host as the report names it: its hostname, and the address it reached the server from."""
    address = host.get("address")
    return f"{host.get('hostname', '?')} ({address})" if address else str(host.get("hostname", "?"))


@dataclass(frozen=True)
class Saturation:
    busiest_cpu_pct: float  # NaN when no worker reported
    worst_lag_p99_ms: float
    reasons: tuple[str, ...]  # empty: the client kept up
    worst_runqueue_wait_pct: float | None
    saturated_hosts: tuple[str, ...] = ()  # named when the shards ran on several hosts (Dask)

    @property
    def saturated(self) -> bool:
        return bool(self.reasons)

    def warning(self) -> str | None:
        """The sentence run.json and the console get, or None when the client kept up."""
        if not self.reasons:
            return None
        wait = self.worst_runqueue_wait_pct
        waited = (
            f"; a worker waited for a free CPU {wait:.0f}% of the window (a busy machine delays the client)"
            if wait is not None and wait >= RUNQUEUE_WAIT_WARN_PCT
            else ""
        )
        where = f" on load host {', '.join(self.saturated_hosts)}" if self.saturated_hosts else ""
        return "saturated: " + "; ".join(self.reasons) + waited + where + " (this cell measured the client)"


def saturation(per_worker: Sequence[Mapping[str, Any]], latency_p99_ms: float = math.nan) -> Saturation:
    """Did the load generator keep up? Judged by its busiest worker's CPU and its worst loop lag, the lag against
    the cell's latency p99 (``loadgen.metrics.loop_lag_limit_ms``)."""
    cpu_pcts = [w["cpu_pct"] for w in per_worker if w["cpu_pct"] is not None]
    lags = [w["loop_lag_p99_ms"] for w in per_worker if w["loop_lag_p99_ms"] is not None]
    waits = [w["runqueue_wait_pct"] for w in per_worker if w["runqueue_wait_pct"] is not None]
    busiest, worst = max(cpu_pcts, default=math.nan), max(lags, default=math.nan)
    reasons = tuple(saturation_reasons(busiest, worst, latency_p99_ms)) if cpu_pcts else ()
    hosts: tuple[str, ...] = ()
    if reasons and any(w["host"].get("executor") == "dask" for w in per_worker if w.get("host")):
        hosts = tuple(
            sorted(
                {
                    host_label(w["host"])
                    for w in per_worker
                    if w.get("host")
                    and saturation_reasons(w["cpu_pct"] or 0.0, w["loop_lag_p99_ms"] or 0.0, latency_p99_ms)
                }
            )
        )
    return Saturation(busiest, worst, reasons, max(waits, default=None), hosts)


# The server runs one event loop: at this share of one core over the window it could not have served more.
SERVER_CPU_FULL_PCT = 95.0
# Host memory available at the window's end below this share of the total: memory is what stops the next size.
MEMORY_LOW_FRACTION = 0.05
MIB = 1024 * 1024


@dataclass(frozen=True)
class LimitEvidence:
    """What a cell measured that can name the limit that stopped it (``stopped_by``); None: not known."""

    client_fd_errors: int = 0  # connects that failed with EMFILE/ENFILE
    client_nofile_limit: int | None = None  # the lowest worker's RLIMIT_NOFILE
    port_errors: int = 0  # connects that failed with EADDRNOTAVAIL
    ports_per_address: int | None = None
    source_addresses: int = 1
    connect_timeouts: int = 0
    connect_timeout_s: float = 0.0
    max_connections_503: int = 0
    max_connections: int | None = None  # server.max_connections
    server_connections_peak: int | None = None
    server_nofile_limit: int | None = None
    server_fds_at_start: int | None = None
    listen_overflows: int | None = None  # connection attempts dropped on a full accept queue (server's namespace)
    listen_backlog: int | None = None
    server_cpu_pct: float | None = None  # % of one core over the window
    memory_available_bytes: int | None = None  # this host's, at the window's end
    memory_total_bytes: int | None = None
    saturation: tuple[str, ...] = ()  # Saturation.reasons


def stopped_by(e: LimitEvidence) -> str:
    """The limits that stopped a cell, one line ('' when none did): descriptors (server, client), ephemeral ports,
    ``server.max_connections``, full accept queues, memory, the server's CPU at a full core, connect timeouts, a
    saturated instrument."""
    parts = []
    if (
        e.server_nofile_limit is not None
        and e.server_connections_peak is not None
        and e.server_connections_peak + (e.server_fds_at_start or 0) >= e.server_nofile_limit
    ):
        parts.append(
            f"server fd limit: RLIMIT_NOFILE {e.server_nofile_limit:,} reached with "
            f"{e.server_connections_peak:,} connections open"
        )
    if e.client_fd_errors:
        limit = f"RLIMIT_NOFILE {e.client_nofile_limit:,} per worker" if e.client_nofile_limit else "RLIMIT_NOFILE"
        parts.append(
            f"client fd limit: {limit}, two per connection ({e.client_fd_errors:,} connects failed with EMFILE)"
        )
    if e.port_errors:
        ports = f"{e.ports_per_address:,} " if e.ports_per_address else ""
        parts.append(
            f"ephemeral ports: {ports}per source address × {e.source_addresses} "
            f"({e.port_errors:,} connects failed with EADDRNOTAVAIL)"
        )
    if e.max_connections_503:
        limit = f" {e.max_connections:,}" if e.max_connections is not None else ""
        parts.append(f"server max_connections{limit}: {e.max_connections_503:,} connections answered 503")
    if e.listen_overflows:
        backlog = f" of {e.listen_backlog:,}" if e.listen_backlog else ""
        parts.append(
            f"listen queue{backlog} (server.listen_backlog, net.core.somaxconn): {e.listen_overflows:,} connection "
            "attempts dropped on a full accept queue (ListenOverflows, the server's network namespace)"
        )
    if (
        e.memory_available_bytes is not None
        and e.memory_total_bytes
        and e.memory_available_bytes < MEMORY_LOW_FRACTION * e.memory_total_bytes
    ):
        parts.append(
            f"memory: {e.memory_available_bytes // MIB:,} MiB of {e.memory_total_bytes // MIB:,} MiB available"
        )
    if e.server_cpu_pct is not None and e.server_cpu_pct >= SERVER_CPU_FULL_PCT:
        parts.append(f"server CPU at {e.server_cpu_pct:.0f} % of its one core")
    if e.connect_timeouts:
        parts.append(f"{e.connect_timeouts:,} connect timeouts ({e.connect_timeout_s:g} s)")
    if e.saturation:
        parts.append("load generator saturated: " + "; ".join(e.saturation))
    return "; ".join(parts)


@dataclass(frozen=True)
class ClockSummary:
    uncertainty_ns: int | None  # the worst shard's clock offset uncertainty; None when none was measured
    warnings: tuple[str, ...]


def clock_summary(clocks: Sequence[Mapping[str, Any]], latency_p50_ms: float | None) -> ClockSummary:
    """The shards' clock offsets to the server: how uncertain the latencies are, and what to warn about."""
    uncertainties = [c["uncertainty_ns"] for c in clocks if c.get("uncertainty_ns") is not None]
    uncertainty = max(uncertainties) if uncertainties else None
    warnings = []
    unmeasured = sorted({str(c["problem"]) for c in clocks if c.get("uncertainty_ns") is None and c.get("problem")})
    if unmeasured:
        warnings.append(
            f"clock offset to the server not measured ({unmeasured[0]}): latencies assume the load hosts' clocks "
            "agree with the server's (docs/contract.md, GET /time)"
        )
    note = clock_warning(uncertainty, latency_p50_ms)
    if note:
        warnings.append(note)
    return ClockSummary(uncertainty, tuple(warnings))


def cell_status(status: str, tcp_info_failures: int) -> str:
    """The runner's status, made ``incomplete`` when byte counts are missing (a failed cell stays failed)."""
    return "incomplete" if tcp_info_failures and status == "ok" else status


def cell_warnings(
    run_warnings: Sequence[str],
    status: str,
    sat: Saturation,
    messages: MessageCounts,
    tcp_info_failures: int,
    clients_late: int,
) -> list[str]:
    """The runner's warnings followed by what the summary found, in a fixed order; a new list."""
    out = list(run_warnings)
    if (warning := sat.warning()) is not None:
        out.append(warning)
    if tcp_info_failures:
        out.append(f"TCP_INFO could not be read {tcp_info_failures} times: the byte and segment counts are incomplete")
    if clients_late:
        out.append(
            f"{clients_late} clients were not subscribed when the window started (their first events count as "
            "lost): lengthen ramp_up_s/warmup_s or use fewer clients per worker"
        )
    if messages.lost and status == "ok":
        out.append(f"{messages.lost} of {messages.expected} messages were not received")
    return out
