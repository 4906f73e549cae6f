"""Derived figures: pure functions over the numbers in summary.csv, and the per-cell table built from them.

Every figure the charts and the report show that is not a summary.csv column comes from a function here,
so a reader can check it by hand and the tests can check it against hand-computed cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.results import CELL_PARAMETERS, records
from analysis.transports import Transports

# What defines a cell, besides run.json's index: compared across runs and held fixed when slicing.
PARAMETERS = (*CELL_PARAMETERS, "varied_extra")

# A repeat whose spread (max - min) / mean exceeds this on a headline figure makes the cell "noisy".
NOISY_SPREAD = 0.10


Record = dict[str, Any]


def first(df: pd.DataFrame) -> Record:
    """The first row of a non-empty table as a dict."""
    return records(df.iloc[:1])[0]


def safe_div(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is zero or NaN (a cell that delivered nothing)."""
    if denominator == 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def split_tcpip_headers(header_bytes: float, segments_down: float, segments_up: float) -> tuple[float, float]:
    """Share the TCP/IP header bytes between directions in proportion to their segments.

    Exact when every segment carries the same header size, which is what the load generator's
    ``tcpip_header_bytes(segments)`` assumes (bytes = segments × header size).
    """
    total = segments_down + segments_up
    if total == 0:
        return 0.0, 0.0
    return header_bytes * segments_down / total, header_bytes * segments_up / total


@dataclass(frozen=True)
class WireSplit:
    """Bytes on the wire per delivered event, by direction and layer."""

    down_payload: float
    down_overhead: float
    down_tcpip: float
    up_payload: float
    up_overhead: float
    up_tcpip: float
    # The overhead's layers (overhead = http + tls): HTTP framing, and TLS records plus handshakes.
    down_http: float = math.nan
    down_tls: float = 0.0
    up_http: float = math.nan
    up_tls: float = 0.0

    @property
    def total(self) -> float:
        return self.down + self.up

    @property
    def down(self) -> float:
        return self.down_payload + self.down_overhead + self.down_tcpip

    @property
    def up(self) -> float:
        return self.up_payload + self.up_overhead + self.up_tcpip


def per_event_split(row: Mapping[str, Any]) -> WireSplit:
    """Split one summary row's bytes per delivered event: payload / HTTP-or-frame overhead / TCP-IP headers."""
    events = float(row["messages_received"])
    down_tcpip, up_tcpip = split_tcpip_headers(
        float(row["bytes_tcpip_headers"]), float(row["tcp_segments_down"]), float(row["tcp_segments_up"])
    )
    layers = {}
    for d in ("down", "up"):
        tls = float(row.get(f"bytes_{d}_tls", 0.0)) + float(row.get(f"bytes_{d}_tls_handshake", 0.0))
        layers[f"{d}_tls"] = safe_div(tls, events)
        layers[f"{d}_http"] = safe_div(float(row.get(f"bytes_{d}_http", row[f"bytes_{d}_overhead"])), events)
    return WireSplit(
        down_payload=safe_div(float(row["bytes_down_payload"]), events),
        down_overhead=safe_div(float(row["bytes_down_overhead"]), events),
        down_tcpip=safe_div(down_tcpip, events),
        up_payload=safe_div(float(row["bytes_up_payload"]), events),
        up_overhead=safe_div(float(row["bytes_up_overhead"]), events),
        up_tcpip=safe_div(up_tcpip, events),
        **layers,
    )


def bits_per_second(byte_count: float, duration_s: float) -> float:
    """Average bit rate of ``byte_count`` bytes over ``duration_s`` seconds."""
    return safe_div(byte_count * 8.0, duration_s)


def extrapolate_mbps(bytes_per_client_per_s: float, clients: int) -> float:
    """Linear extrapolation: the Mbps that ``clients`` clients need if each costs ``bytes_per_client_per_s``.

    Mbps as Lubbers & Greco (2010) count it: bits / 2**20 (so 871 B × 1,000 clients → 6.6 Mbps).
    Linear means no sharing between clients and no saturation: the very assumption of the reference.
    """
    return bytes_per_client_per_s * clients * 8.0 / 2**20


def per_client_per_minute(count: float, clients: float, duration_s: float) -> float:
    """A count over the whole window and all clients, per client per minute."""
    return safe_div(count, clients * duration_s / 60.0)


def cpu_ms_per_thousand_events(server_cpu_s: float, events_delivered: float) -> float:
    """Server CPU milliseconds spent per 1,000 delivered events."""
    return safe_div(server_cpu_s * 1000.0, events_delivered / 1000.0)


# Linux's USER_HZ: /proc/<pid>/stat and times() count user and system CPU in these ticks. A server's CPU counters
# are taken to count them when its /stats does not say otherwise (summary.csv's server_cpu_unit_s; pushbench's own
# server reads getrusage, in microseconds).
CLOCK_TICKS_PER_S = 100
CLOCK_TICK_S = 1.0 / CLOCK_TICKS_PER_S


def cpu_reads_zero(server_cpu_s: float, unit_s: float = CLOCK_TICK_S) -> bool:
    """Did the window's CPU delta read 0? ``unit_s``: the step of each of the server's user and system counters
    (under half a step: the difference of whole steps is a whole number of them, give or take float rounding)."""
    return not math.isnan(server_cpu_s) and server_cpu_s < 0.5 * unit_s


def cpu_resolution_s(unit_s: float = CLOCK_TICK_S) -> float:
    """How far a window's CPU reading can be from the CPU really used, either way (and the most a window that read 0
    can have used): user and system time are each counted in whole steps of ``unit_s``, so 2 steps in all (20 ms
    for 10-ms clock ticks, 2 µs for getrusage's microseconds)."""
    return 2.0 * unit_s


def pooled_cpu_slack_s(units_s: Sequence[float]) -> float:
    """How far the total of several windows' CPU readings can be from the CPU really used, either way: each window's
    is within ``cpu_resolution_s`` of its step (``units_s``, one per window), so the total is within their sum."""
    return float(sum(cpu_resolution_s(u) for u in units_s))


def cpu_ms_per_thousand_events_below(
    server_cpu_s: float, events_delivered: float, unit_s: float = CLOCK_TICK_S
) -> float:
    """When the window's CPU read 0: the figure ``cpu_ms_per_thousand_events`` is surely under, from the counters'
    resolution and the events delivered; NaN when the CPU was resolved (it read 1 step or more)."""
    if not cpu_reads_zero(server_cpu_s, unit_s):
        return math.nan
    return cpu_ms_per_thousand_events(cpu_resolution_s(unit_s), events_delivered)


def cpu_us_per_delivery(server_cpu_s: float, deliveries: float) -> float:
    """Server CPU microseconds per event handed to a client socket (``server_deliveries``)."""
    return safe_div(server_cpu_s * 1e6, deliveries)


def deliveries_per_cpu_s(deliveries: float, server_cpu_s: float) -> float:
    """The server's fan-out: events handed to client sockets per second of server CPU."""
    return safe_div(deliveries, server_cpu_s)


def pooled_fanout(
    deliveries: Sequence[float], server_cpu_s: Sequence[float], units_s: Sequence[float]
) -> tuple[float, float, float]:
    """The fan-out over repeats, pooled: (total deliveries ÷ total server CPU, and the lowest and highest it can be).

    Each window's CPU is the difference of two readings of user and system time, each counted in whole steps of
    that window's ``units_s`` (a 10-ms clock tick, or getrusage's microsecond), so the total is within
    ``pooled_cpu_slack_s`` of the CPU really used, either way. The bounds are the deliveries over the total CPU plus
    and minus that (the highest is infinite when the total could be 0). NaN when there is nothing to pool."""
    total_deliveries, total_cpu = float(sum(deliveries)), float(sum(server_cpu_s))
    if not server_cpu_s or total_deliveries <= 0:
        return math.nan, math.nan, math.nan
    slack = pooled_cpu_slack_s(units_s)
    highest = total_deliveries / (total_cpu - slack) if total_cpu > slack else math.inf
    return safe_div(total_deliveries, total_cpu), total_deliveries / (total_cpu + slack), highest


def cpu_units_s(summary: pd.DataFrame, clock_ticks_per_s: float = CLOCK_TICKS_PER_S) -> list[float]:
    """Each row's ``server_cpu_unit_s`` (the step of the server's CPU counters in that window); a clock tick of
    ``clock_ticks_per_s`` where the column is absent or empty (runs written before it existed)."""
    tick = 1.0 / clock_ticks_per_s
    if "server_cpu_unit_s" not in summary.columns:
        return [tick] * len(summary)
    values = pd.to_numeric(summary["server_cpu_unit_s"], errors="coerce")
    return [float(v) if not math.isnan(v) and v > 0 else tick for v in values]


def bytes_per_second(byte_count: float, duration_s: float) -> float:
    """Average rate of ``byte_count`` bytes over ``duration_s`` seconds."""
    return safe_div(byte_count, duration_s)


def memory_per_connection_bytes(
    rss_bytes: float, clients: float, rss_smallest_bytes: float, clients_smallest: float
) -> tuple[float, bool]:
    """Server memory per client connection at ``clients``, and whether it is marginal.

    Against a smaller measured size: (RSS − RSS at the smaller size) ÷ (clients − its clients), what each
    connection added beyond the process's fixed baseline → (that, True). At the smallest size itself:
    RSS ÷ clients, which includes the baseline → (that, False).
    """
    if clients > clients_smallest:
        return safe_div(rss_bytes - rss_smallest_bytes, clients - clients_smallest), True
    return safe_div(rss_bytes, clients), False


def memory_per_client_bytes(clients: Sequence[float], rss_bytes: Sequence[float]) -> tuple[float, bool]:
    """Memory per connected client and whether it is marginal.

    With two or more distinct client counts: the least-squares slope of RSS against clients (the cost of one
    more client, without the process's fixed baseline) → (slope, True). With one: RSS / clients, which
    includes the baseline → (ratio, False).
    """
    pairs = [(c, r) for c, r in zip(clients, rss_bytes, strict=True) if not math.isnan(r) and c > 0]
    if not pairs:
        return math.nan, False
    xs = np.array([p[0] for p in pairs], dtype=float)
    ys = np.array([p[1] for p in pairs], dtype=float)
    if len(set(xs.tolist())) < 2:
        return float(np.mean(ys / xs)), False
    slope = float(np.polyfit(xs, ys, 1)[0])
    return slope, True


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Exponent k of the best fit y ∝ x^k (1 = linear growth); NaN with fewer than two usable points."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0 and not math.isnan(y)]
    if len({p[0] for p in pairs}) < 2:
        return math.nan
    lx = np.log([p[0] for p in pairs])
    ly = np.log([p[1] for p in pairs])
    return float(np.polyfit(lx, ly, 1)[0])


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / mean of repeats; 0 for one repeat, NaN when the mean is 0 or nothing is known."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan
    if len(vals) == 1:
        return 0.0
    mean = sum(vals) / len(vals)
    return safe_div(max(vals) - min(vals), abs(mean))


def polls_estimate(clients: float, duration_s: float, poll_interval_s: float) -> float:
    """Requests a short-polling client population makes in a window: clients × duration / interval.

    An estimate (±1 poll per client): summary.csv records bytes, not requests.
    """
    return safe_div(clients * duration_s, poll_interval_s)


# The headline figures, compared across runs and checked for noise: column -> (label, unit).
HEADLINES: dict[str, tuple[str, str]] = {
    "wire_bytes_per_event": ("bytes on the wire per delivered event", "B"),
    "overhead_bytes_per_event": ("HTTP/frame overhead per delivered event", "B"),
    "wire_bps_per_client": ("bits per second per client", "bit/s"),
    "latency_p50_ms": ("median latency", "ms"),
    "latency_p99_ms": ("p99 latency", "ms"),
    "server_cpu_ms_per_1k_events": ("server CPU per 1,000 delivered events", "ms"),
    "connections_per_client_per_min": ("connections opened per client per minute", "1/min"),
}


def derive(summary: pd.DataFrame, polling: Sequence[str], clock_ticks_per_s: float = CLOCK_TICKS_PER_S) -> pd.DataFrame:
    """summary.csv plus the derived per-row figures (all repeats, every status); ``polling``: the transports
    whose clients poll on their own schedule (they get ``overhead_bytes_per_poll``); ``clock_ticks_per_s``: the
    unit of the server's CPU counters where summary.csv does not say (``cpu_units_s``)."""
    df = summary.copy()
    df["server_cpu_unit_s"] = cpu_units_s(summary, clock_ticks_per_s)
    splits = [per_event_split(row) for row in records(df)]
    for name in (
        "down_payload", "down_overhead", "down_tcpip", "up_payload", "up_overhead", "up_tcpip",
        "down_http", "down_tls", "up_http", "up_tls",
    ):  # fmt: skip
        df[f"{name}_per_event"] = [getattr(s, name) for s in splits]
    wire = df["bytes_down_tcp"] + df["bytes_up_tcp"] + df["bytes_tcpip_headers"]
    overhead = df["bytes_down_overhead"] + df["bytes_up_overhead"]
    df["events_per_s"] = df["rate_hz"] * df["burst"]
    df["wire_bytes_per_event"] = [s.total for s in splits]
    df["overhead_bytes_per_event"] = [safe_div(o, m) for o, m in zip(overhead, df["messages_received"], strict=True)]
    df["http_bytes_per_event"] = df["down_http_per_event"] + df["up_http_per_event"]
    df["tls_bytes_per_event"] = df["down_tls_per_event"] + df["up_tls_per_event"]
    df["wire_bps_total"] = [bits_per_second(b, d) for b, d in zip(wire, df["duration_s"], strict=True)]
    df["wire_bps_per_client"] = df["wire_bps_total"] / df["clients"]
    df["overhead_bytes_per_client_per_s"] = [
        safe_div(o, c * d) for o, c, d in zip(overhead, df["clients"], df["duration_s"], strict=True)
    ]
    df["wire_bytes_per_client_per_s"] = [
        safe_div(w, c * d) for w, c, d in zip(wire, df["clients"], df["duration_s"], strict=True)
    ]
    per_client_s = df["clients"] * df["duration_s"]
    for col, source in (
        ("up_overhead_bytes_per_client_per_s", "bytes_up_overhead"),
        ("down_overhead_bytes_per_client_per_s", "bytes_down_overhead"),
        ("payload_bytes_per_client_per_s", "bytes_down_payload"),
        ("tcpip_bytes_per_client_per_s", "bytes_tcpip_headers"),
        ("events_per_client_per_s", "messages_received"),
    ):
        df[col] = [safe_div(b, n) for b, n in zip(df[source], per_client_s, strict=True)]
    df["overhead_bytes_per_poll"] = [
        safe_div(o, polls_estimate(c, d, i)) if t in polling else math.nan
        for o, c, d, i, t in zip(
            overhead, df["clients"], df["duration_s"], df["poll_interval_s"], df["transport"], strict=True
        )
    ]
    df["connections_per_client_per_min"] = [
        per_client_per_minute(n, c, d)
        for n, c, d in zip(df["connections_opened"], df["clients"], df["duration_s"], strict=True)
    ]
    df["peak_connections_per_client"] = df["connections_peak"] / df["clients"]
    df["server_cpu_ms_per_1k_events"] = [
        cpu_ms_per_thousand_events(c, m) for c, m in zip(df["server_cpu_s"], df["messages_received"], strict=True)
    ]
    df["server_cpu_ms_per_1k_events_below"] = [
        cpu_ms_per_thousand_events_below(c, m, u)
        for c, m, u in zip(df["server_cpu_s"], df["messages_received"], df["server_cpu_unit_s"], strict=True)
    ]
    df["wire_bytes_per_s"] = [bytes_per_second(b, d) for b, d in zip(wire, df["duration_s"], strict=True)]
    df["server_cpu_pct"] = [safe_div(c * 100.0, d) for c, d in zip(df["server_cpu_s"], df["duration_s"], strict=True)]
    return df


AGGREGATED = (
    "down_payload_per_event",
    "down_overhead_per_event",
    "down_tcpip_per_event",
    "up_payload_per_event",
    "up_overhead_per_event",
    "up_tcpip_per_event",
    "down_http_per_event",
    "down_tls_per_event",
    "up_http_per_event",
    "up_tls_per_event",
    "http_bytes_per_event",
    "tls_bytes_per_event",
    "wire_bytes_per_event",
    "overhead_bytes_per_event",
    "wire_bps_total",
    "wire_bps_per_client",
    "overhead_bytes_per_client_per_s",
    "wire_bytes_per_client_per_s",
    "connections_per_client_per_min",
    "peak_connections_per_client",
    "connections_peak",
    "server_cpu_ms_per_1k_events",
    "server_cpu_ms_per_1k_events_below",
    "wire_bytes_per_s",
    "server_cpu_pct",
    "server_rss_bytes",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "up_overhead_bytes_per_client_per_s",
    "down_overhead_bytes_per_client_per_s",
    "payload_bytes_per_client_per_s",
    "tcpip_bytes_per_client_per_s",
    "events_per_client_per_s",
    "overhead_bytes_per_poll",
    "events_per_s",
    "request_header_bytes",
    "messages_received",
    "messages_expected",
    "messages_lost",
    "messages_duplicated",
    "errors",
)


def aggregate(derived: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (matrix point): the mean over its measured repeats, with min, max and spread.

    Failed repeats are left out (they are listed in the report's warnings); ``repeats`` counts the rest.
    """
    measured = derived[derived["status"] != "failed"]
    rows = []
    for index, group in measured.groupby("cell_index", sort=True):
        head = first(group)
        row: dict[str, Any] = {"cell_index": index, **{p: head[p] for p in PARAMETERS if p in head}}
        row["repeats"] = len(group)
        row["cell_ids"] = ", ".join(group["cell_id"])
        for col in AGGREGATED:
            values = group[col].astype(float).tolist()
            known = [v for v in values if not math.isnan(v)]
            row[col] = sum(known) / len(known) if known else math.nan
            row[f"{col}__min"] = min(known) if known else math.nan
            row[f"{col}__max"] = max(known) if known else math.nan
            row[f"{col}__spread"] = relative_spread(values)
        row["saturated"] = bool(group["saturated"].any())
        row["incomplete"] = bool((group["status"] != "ok").any())
        rows.append(row)
    return pd.DataFrame(rows)


def baseline(
    cells: pd.DataFrame, config: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameter values the run varies other factors around.

    For each parameter: the value the run's config sets outside its sweeps, when some feed cell has it
    (a sweep varies one factor around exactly that), else the most common value (ties: the smallest).
    ``overrides`` (``--baseline KEY=VALUE``) win over both.
    """
    pool = cells[cells["scenario"] == "feed"] if (cells["scenario"] == "feed").any() else cells
    sections = [s for s in (config or {}).values() if isinstance(s, Mapping)]
    out: dict[str, Any] = {}
    for p in PARAMETERS:
        if p == "transport" or p not in pool.columns:
            continue
        present = pool[p].tolist()
        configured = [s[p] for s in sections if p in s]
        if p == "varied_extra" and "" in present:
            out[p] = ""
        elif configured and any(_same(configured[0], v) for v in present):
            out[p] = next(v for v in present if _same(configured[0], v))
        else:
            counts: dict[Any, int] = {}
            for v in present:
                counts[v] = counts.get(v, 0) + 1
            out[p] = sorted(counts, key=lambda v: (-counts[v], _sort_key(v)))[0]
    for k, v in (overrides or {}).items():
        out[k] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool | np.bool_) or isinstance(b, bool | np.bool_):
        return bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float | np.number):
        return float(a) == float(b)
    return a == b


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def slice_cells(cells: pd.DataFrame, base: Mapping[str, Any], free: Sequence[str]) -> pd.DataFrame:
    """The cells equal to ``base`` in every parameter except ``free`` (and transport, always free)."""
    mask = pd.Series(True, index=cells.index)
    for p in PARAMETERS:
        if p == "transport" or p in free or p not in base or p not in cells.columns:
            continue
        mask &= cells[p] == base[p]
    return cells[mask]


def transports_in(cells: pd.DataFrame, transports: Transports) -> list[str]:
    """The transports present, in the run's registry order."""
    return transports.order(cells["transport"]) if not cells.empty else []
