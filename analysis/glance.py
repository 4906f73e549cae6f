"""The answer at a glance: per transport, at the baseline, what one delivered event costs on the wire by layer,
how late it arrives, and what it costs in connections and server CPU (the report's first screen).

Layers are read from whichever summary.csv columns the run has (``LAYERS``): a run over TLS has TLS columns and
gets a TLS layer; an older run without the HTTP column falls back to ``bytes_*_overhead``. Every layer of a row
sums to the bytes on the wire: ``bytes_down_tcp + bytes_up_tcp + bytes_tcpip_headers``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analysis.metrics import first, records, safe_div, slice_cells, transports_in
from analysis.model import Analysis

# The transport every other is compared with in the "ratio to WebSocket" column.
REFERENCE_TRANSPORT = "ws"


@dataclass(frozen=True)
class Layer:
    """One layer of the bytes on the wire: the summary.csv columns (both directions) that hold it."""

    key: str
    label: str
    columns: tuple[str, ...]
    fallback: tuple[str, ...] = ()  # read instead when ``columns`` are absent from the run
    hatch: str = ""
    alpha: float = 1.0


LAYERS: tuple[Layer, ...] = (  # bottom to top of a stacked bar
    Layer("payload", "payload", ("bytes_down_payload", "bytes_up_payload")),
    Layer(
        "http",
        "HTTP / frame overhead",
        ("bytes_down_http", "bytes_up_http"),
        fallback=("bytes_down_overhead", "bytes_up_overhead"),
        hatch="//",
        alpha=0.55,
    ),
    Layer(
        "tls",
        "TLS (records and handshakes)",
        ("bytes_down_tls", "bytes_up_tls", "bytes_tls_handshake"),
        hatch="xx",
        alpha=0.4,
    ),
    Layer("tcpip", "TCP/IP headers (derived)", ("bytes_tcpip_headers",), hatch="..", alpha=0.25),
)


def _number(row: Mapping[str, object], column: str) -> float | None:
    """A summary value as a float; None when the run has no such column (or left it empty)."""
    if column not in row:
        return None
    value = row[column]
    if value is None or value == "":
        return None
    number = float(str(value)) if not isinstance(value, int | float) else float(value)
    return None if math.isnan(number) else number


def layer_bytes(row: Mapping[str, object]) -> dict[str, float]:
    """Bytes of one summary row per layer (both directions, whole window), for the layers the run has columns for.

    A layer whose columns are all absent (and its fallback too) is left out, so a cleartext run has no TLS key.
    """
    out: dict[str, float] = {}
    for layer in LAYERS:
        for columns in (layer.columns, layer.fallback):
            values = [_number(row, c) for c in columns]
            if columns and any(v is not None for v in values):
                out[layer.key] = sum(v for v in values if v is not None)
                break
    return out


def layers_per_event(rows: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Bytes per delivered event by layer: for each repeat, the layer's bytes ÷ its messages received; then the
    mean over repeats (as every headline figure of the report). Layers missing from a repeat count as 0."""
    per_repeat = [{k: safe_div(v, float(str(r["messages_received"]))) for k, v in layer_bytes(r).items()} for r in rows]
    keys = [layer.key for layer in LAYERS if any(layer.key in p for p in per_repeat)]
    out = {}
    for k in keys:
        known = [p.get(k, 0.0) for p in per_repeat if not math.isnan(p.get(k, 0.0))]
        out[k] = sum(known) / len(known) if known else math.nan
    return out


@dataclass(frozen=True)
class GlanceRow:
    """One transport at the baseline, as the first screen shows it (means of the cell's measured repeats)."""

    transport: str
    label: str
    cell_ids: str
    layers: dict[str, float]  # bytes per delivered event, by layer key
    bytes_per_event: float  # their sum
    ratio_to_reference: float  # bytes_per_event ÷ the WebSocket row's; NaN without one
    latency_p50_ms: float
    latency_p99_ms: float
    connections_per_client: float  # peak concurrent connections at the server ÷ clients
    connections_opened_per_client_per_min: float
    server_cpu_ms_per_1k_events: float
    # When every repeat's server CPU read 0 ticks: the bound the figure is under (tick resolution ÷ events); else NaN.
    server_cpu_ms_per_1k_events_below: float = math.nan


def glance_rows(a: Analysis) -> list[GlanceRow]:
    """One row per transport measured at the baseline in the feed scenario (the cells the verdicts judge)."""
    tt = a.transports
    chosen = slice_cells(a.cells, {**a.base, "scenario": "feed"}, free=())
    measured = a.rows[a.rows["status"] != "failed"]
    partial = []
    for t in transports_in(chosen, tt):
        cell = first(chosen[chosen["transport"] == t])
        repeats = records(measured[measured["cell_index"] == cell["cell_index"]])
        layers = layers_per_event(repeats)
        partial.append((t, cell, layers, sum(layers.values())))
    reference = next((total for t, _, _, total in partial if t == REFERENCE_TRANSPORT), math.nan)
    return [
        GlanceRow(
            transport=t,
            label=tt.label(t),
            cell_ids=str(cell["cell_ids"]),
            layers=layers,
            bytes_per_event=total,
            ratio_to_reference=safe_div(total, reference),
            latency_p50_ms=float(cell["latency_p50_ms"]),
            latency_p99_ms=float(cell["latency_p99_ms"]),
            connections_per_client=float(cell["peak_connections_per_client"]),
            connections_opened_per_client_per_min=float(cell["connections_per_client_per_min"]),
            server_cpu_ms_per_1k_events=float(cell["server_cpu_ms_per_1k_events"]),
            server_cpu_ms_per_1k_events_below=cpu_ms_per_thousand_events_bound(cell),
        )
        for t, cell, layers, total in partial
    ]


def cpu_ms_per_thousand_events_bound(cell: Mapping[str, object]) -> float:
    """A cell's bound on its server CPU per 1,000 events when every repeat's CPU read 0 (the figure is then 0 and
    means only "under the bound"); NaN when the CPU was resolved in some repeat."""
    value = float(str(cell["server_cpu_ms_per_1k_events"]))
    return float(str(cell["server_cpu_ms_per_1k_events_below"])) if value == 0 else math.nan


def layers_drawn(rows: Sequence[GlanceRow]) -> list[Layer]:
    """The layers worth a place in the legend: present in some row with a non-zero value."""
    return [layer for layer in LAYERS if any(r.layers.get(layer.key, 0.0) > 0 for r in rows)]
