"""Capacity: where each transport stops.

Per transport (and stack), over the feed cells that differ from the baseline only in their number of clients: the
largest client count at which the worst repeat's p99 latency stayed at or under the threshold
(``[report] capacity_p99_s``), no message was lost and the load generator was not saturated; what the server spent
there (CPU per delivery, memory per connection) and what crossed the wire; and what failed at the next size up.

The per-size judgement (``size_failure``) and the walk up the sizes (``capacity_of``) are pure functions of
summary rows; the figures come from ``analysis.metrics``' named formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.fmt import fmt
from analysis.metrics import (
    cpu_reads_zero,
    cpu_us_per_delivery,
    deliveries_per_cpu_s,
    memory_per_connection_bytes,
    pooled_cpu_slack_s,
    pooled_fanout,
    records,
    slice_cells,
    transports_in,
)
from analysis.model import Analysis

# The fan-out target (a design goal of the suite) for the streaming push transports at 10,000 clients.
FANOUT_TARGET_PER_CPU_S = 100_000
FANOUT_TARGET_CLIENTS = 10_000

Record = Mapping[str, Any]


def number(row: Record, column: str) -> float:
    """A summary value as a float: NaN when the column is absent or empty (extra columns are read as text)."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def text(row: Record, column: str) -> str:
    """A summary value as stripped text: '' when absent, empty or NaN."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


SATURATED_BY = "load generator saturated: "  # how loadgen.summary.stopped_by names it


def saturation_reason(row: Record, warnings: Sequence[str]) -> str:
    """Why the load generator was saturated in this repeat: the load generator's own sentence from run.json
    (``saturated: <reasons> (this cell measured the client)``), else the two figures it judges by."""
    for w in warnings:
        if str(w).startswith("saturated: "):
            reason = str(w).removeprefix("saturated: ")
            return reason.removesuffix(" (this cell measured the client)")
    return f"busiest worker {fmt(number(row, 'loadgen_cpu_pct'))} % CPU, event-loop lag p99 {fmt(number(row, 'loop_lag_p99_ms'))} ms"


def size_failure(rows: Sequence[Record], threshold_ms: float, warnings: Mapping[str, Sequence[str]]) -> str:
    """What failed at one client count ('' when it passed), every condition in one line, in this order: the limit
    the load generator named (``stopped_by``), failed repeats, p99 over the threshold (the worst repeat), messages
    lost, a saturated load generator and why. ``warnings``: run.json's warnings by cell_id."""
    parts = list(dict.fromkeys(s for r in rows if (s := text(r, "stopped_by"))))
    measured = [r for r in rows if r["status"] != "failed"]
    if len(measured) < len(rows):
        parts.append(f"{len(rows) - len(measured)} of {len(rows)} repeats failed")
    if measured:
        p99s = [number(r, "latency_p99_ms") for r in measured]
        if all(math.isnan(p) for p in p99s):
            parts.append("no event delivered")
        elif (worst := max(p for p in p99s if not math.isnan(p))) > threshold_ms:
            parts.append(f"p99 {fmt(worst)} ms > {fmt(threshold_ms)} ms")
        lost = sum(number(r, "messages_lost") for r in measured)
        if lost > 0:
            expected = sum(number(r, "messages_expected") for r in measured)
            parts.append(f"{fmt(lost)} of {fmt(expected)} messages lost")
        reasons = [saturation_reason(r, warnings.get(str(r["cell_id"]), ())) for r in measured if bool(r["saturated"])]
        # stopped_by already names a saturated load generator with its reasons (runs since it has): not twice.
        if reasons and not any(p.startswith(SATURATED_BY) or f"; {SATURATED_BY}" in p for p in parts):
            parts.append("load generator saturated (" + "; ".join(dict.fromkeys(reasons)) + ")")
    return "; ".join(parts)


@dataclass(frozen=True)
class Bounded:
    """A figure, or a bound on it when the server's CPU read 0: ``relation`` '<' or '>'; ``low`` and ``high``: the
    range the resolution of the server's CPU counters leaves it in (``pooled_fanout``), NaN when unknown."""

    value: float
    relation: str = ""
    low: float = math.nan
    high: float = math.nan

    def text(self) -> str:
        return f"{self.relation} {fmt(self.value)}" if self.relation else fmt(self.value)

    def range_text(self) -> str:
        """'low–high', or '' when the range is unknown."""
        if math.isnan(self.low) or math.isnan(self.high):
            return ""
        return f"{fmt(self.low)}–{fmt(self.high) if math.isfinite(self.high) else '∞'}"


def cpu_figures(rows: Sequence[Record]) -> tuple[Bounded, Bounded]:
    """(server CPU µs per delivery, deliveries per server CPU-second), pooled over the measured repeats: their total
    CPU and total deliveries (``pooled_fanout``), with the range the resolution of each repeat's CPU counters
    (``server_cpu_unit_s``: a 10-ms clock tick, or 1 µs) allows.

    When the total CPU read 0, both are bounds from that resolution (2 steps per repeat): '<' for CPU per delivery,
    '>' for the fan-out.
    """
    cpus, counts, units = [], [], []
    for r in rows:
        cpu, deliveries = number(r, "server_cpu_s"), number(r, "server_deliveries")
        if math.isnan(cpu) or math.isnan(deliveries) or deliveries <= 0:
            continue
        cpus.append(cpu)
        counts.append(deliveries)
        units.append(number(r, "server_cpu_unit_s"))
    if not cpus:
        return Bounded(math.nan), Bounded(math.nan)
    total_cpu, total = sum(cpus), sum(counts)
    if cpu_reads_zero(total_cpu, max(units)):
        slack = pooled_cpu_slack_s(units)
        return Bounded(cpu_us_per_delivery(slack, total), "<"), Bounded(deliveries_per_cpu_s(total, slack), ">")
    fanout, low, high = pooled_fanout(counts, cpus, units)
    return (
        Bounded(cpu_us_per_delivery(total_cpu, total), "", 1e6 / high, 1e6 / low),
        Bounded(fanout, "", low, high),
    )


def mean_of(rows: Sequence[Record], column: str) -> float:
    values = [v for r in rows if not math.isnan(v := number(r, column))]
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True)
class Size:
    """One client count of one transport and stack: its verdict and figures (means of the measured repeats)."""

    clients: float
    cell_ids: str
    repeats: int  # measured (not failed)
    p99_ms: float  # the worst measured repeat's
    threshold_ms: float  # what p99 was judged against (latency_threshold_ms)
    failure: str  # '' when the size passed
    cpu_us_per_delivery: Bounded
    deliveries_per_cpu_s: Bounded
    rss_bytes: float
    wire_bytes_per_s: float  # TCP payload both directions + TCP/IP headers (derived), all clients

    @property
    def passed(self) -> bool:
        return not self.failure


def latency_threshold_ms(threshold_s: float, polls: bool, poll_interval_s: float) -> float:
    """The p99 latency a size must stay at or under: the threshold, plus one poll interval for a transport that
    polls. A polled event waits up to one interval for the next poll by design (p99 ≈ the interval however idle the
    server), so that wait is the configured cost of polling, not what stops it; what is left over the interval is
    judged like any push transport's latency."""
    extra_s = poll_interval_s if polls and not math.isnan(poll_interval_s) else 0.0
    return (threshold_s + extra_s) * 1000.0


def size_of(rows: Sequence[Record], threshold_ms: float, warnings: Mapping[str, Sequence[str]]) -> Size:
    measured = [r for r in rows if r["status"] != "failed"]
    p99s = [p for r in measured if not math.isnan(p := number(r, "latency_p99_ms"))]
    cpu, fanout = cpu_figures(measured)
    return Size(
        clients=number(rows[0], "clients"),
        cell_ids=", ".join(str(r["cell_id"]) for r in rows),
        repeats=len(measured),
        p99_ms=max(p99s) if p99s else math.nan,
        threshold_ms=threshold_ms,
        failure=size_failure(rows, threshold_ms, warnings),
        cpu_us_per_delivery=cpu,
        deliveries_per_cpu_s=fanout,
        rss_bytes=mean_of(measured, "server_rss_bytes"),
        wire_bytes_per_s=mean_of(measured, "wire_bytes_per_s"),
    )


@dataclass(frozen=True)
class Capacity:
    """One transport over one stack: its sizes in order, the capacity and the size that stopped it."""

    transport: str
    label: str
    stack: str
    stack_label: str
    sizes: tuple[Size, ...]  # ascending client counts
    capacity: Size | None  # the largest passing size below the first failing one; None when the smallest failed
    stopped: Size | None  # the first failing size; None when every size passed
    memory_per_connection_bytes: float
    memory_marginal: bool  # True: against the smallest size (baseline excluded); False: RSS ÷ clients

    @property
    def passed_after_stop(self) -> list[Size]:
        """Larger sizes that passed again after the first failure (a transient limit, or noise)."""
        if self.stopped is None:
            return []
        return [s for s in self.sizes if s.clients > self.stopped.clients and s.passed]

    def capacity_text(self) -> str:
        if self.capacity is None:
            return f"under {fmt(self.sizes[0].clients)}"
        return fmt(self.capacity.clients)

    def stopped_text(self) -> str:
        """What stopped the transport at the next size up, or 'not reached up to N'."""
        if self.stopped is None:
            return f"not reached up to {fmt(self.sizes[-1].clients)} clients"
        again = self.passed_after_stop
        tail = f" (passed again at {', '.join(fmt(s.clients) for s in again)})" if again else ""
        return f"at {fmt(self.stopped.clients)} clients: {self.stopped.failure}{tail}"


def capacity_of(sizes: Sequence[Size]) -> tuple[Size | None, Size | None]:
    """(capacity, stopped): walking up the sizes, the last that passed before the first that failed, and that one."""
    capacity = None
    for size in sorted(sizes, key=lambda s: s.clients):
        if not size.passed:
            return capacity, size
        capacity = size
    return capacity, None


def capacities(a: Analysis) -> list[Capacity]:
    """One Capacity per stack and transport among the baseline's feed cells with any number of clients (failed
    ones included: a size that failed stops the transport)."""
    rows = slice_cells(a.rows, {**a.base, "scenario": "feed"}, free=("clients", "stack"))
    if rows.empty:
        return []
    if "stack" not in rows.columns:
        rows = rows.assign(stack="h1")
    warnings = {str(c["cell_id"]): c.get("warnings") or [] for c in a.run.meta.get("cells", [])}
    out = []
    for stack in a.run.stacks.order(rows["stack"].unique()):
        for t in transports_in(rows[rows["stack"] == stack], a.transports):
            mine = rows[(rows["stack"] == stack) & (rows["transport"] == t)]
            polls = a.transports.info(t).polls
            sizes = tuple(
                size_of(
                    records(group),
                    latency_threshold_ms(a.capacity_p99_s, polls, number(records(group)[0], "poll_interval_s")),
                    warnings,
                )
                for _, group in sorted(mine.groupby("cell_index"), key=lambda kv: float(kv[1]["clients"].iloc[0]))
            )
            capacity, stopped = capacity_of(sizes)
            memory, marginal = (
                memory_per_connection_bytes(capacity.rss_bytes, capacity.clients, sizes[0].rss_bytes, sizes[0].clients)
                if capacity is not None
                else (math.nan, False)
            )
            out.append(
                Capacity(
                    transport=t,
                    label=a.transports.label(t),
                    stack=str(stack),
                    stack_label=a.run.stacks.label(str(stack)),
                    sizes=sizes,
                    capacity=capacity,
                    stopped=stopped,
                    memory_per_connection_bytes=memory,
                    memory_marginal=marginal,
                )
            )
    return out


def fanout_target_applies(transport: str, clients: float, streaming: Sequence[str]) -> bool:
    """The fan-out target (≥ 100,000 deliveries per server CPU-second) is for WebSocket and SSE at 10,000 clients."""
    return transport in streaming and clients >= FANOUT_TARGET_CLIENTS


def fanout_met(figure: Bounded) -> bool | None:
    """Did a fan-out figure meet the target? With its range (``pooled_fanout``): met when all of the range is at or above it, not
    met when all of it is below, None in between. Without one: None when unknown (NaN, or only an upper bound below
    it)."""
    if math.isnan(figure.value):
        return None
    if not math.isnan(figure.low):
        if figure.low >= FANOUT_TARGET_PER_CPU_S:
            return True
        return False if figure.high < FANOUT_TARGET_PER_CPU_S else None
    if figure.value >= FANOUT_TARGET_PER_CPU_S:
        return True if figure.relation in ("", ">") else None
    return False if figure.relation in ("", "<") else None


def has_sweep(caps: Sequence[Capacity]) -> bool:
    """Does any transport have more than one client count (something to find a capacity along)?"""
    return any(len(c.sizes) > 1 for c in caps)
