"""The six charts of the report, each a matplotlib Figure built from an Analysis (no pyplot, no global state).

Every chart keeps one colour per transport, states its units, and says in its title which cells it shows,
so a reader needs neither the code nor the config to read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter

from analysis.capacity import FANOUT_TARGET_CLIENTS, FANOUT_TARGET_PER_CPU_S, capacities
from analysis.fmt import fmt, fmt_bound
from analysis.glance import LAYERS as GLANCE_LAYERS
from analysis.glance import cpu_ms_per_thousand_events_bound, glance_rows, layers_drawn
from analysis.metrics import (
    first,
    loglog_slope,
    memory_per_client_bytes,
    slice_cells,
    transports_in,
)
from analysis.model import Analysis
from analysis.transports import Transports

# One colour and marker per transport, the same in every chart: the run's transport table (run.json).
# The per-direction layers of the header chart (``derive``'s <direction>_<suffix>_per_event columns), stacked from
# the bottom, styled as the headline's layers.
_LAYER = {layer.key: layer for layer in GLANCE_LAYERS}
LAYERS = tuple((key, _LAYER[key]) for key in ("payload", "http", "tls", "tcpip"))

matplotlib.rcParams.update(
    {
        "svg.hashsalt": "pushbench",  # stable element ids: the same run gives the same SVG
        "svg.fonttype": "none",  # text stays text in the SVG
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 9,
        "axes.titlesize": 10,
        "figure.titlesize": 12,
        "legend.fontsize": 8,
    }
)


def layer_style(colour: str, alpha: float) -> dict[str, Any]:
    """A layer's face: the transport's colour blended with white (opaque); its hatch lines and outline at full colour.

    Not ``alpha=`` on the patch: matplotlib's SVG draws a hatch pattern over a face of the same RGB and fades both
    with the patch's opacity, so the hatch vanishes in the SVG (and in the printed report) though the PNG shows it.
    """
    r, g, b, _ = to_rgba(colour)
    return {"facecolor": (1 - alpha + alpha * r, 1 - alpha + alpha * g, 1 - alpha + alpha * b), "edgecolor": colour}


def describe(base: dict[str, Any], free: tuple[str, ...] = ()) -> str:
    """The fixed parameters of a chart, for its title: '100 clients, 10 events/s, 100-B payload, minimal headers'."""
    parts = []
    if "clients" not in free:
        parts.append(f"{fmt(base['clients'])} clients")
    if "rate_hz" not in free:
        rate = base["rate_hz"] * base["burst"]
        parts.append(f"{fmt(rate)} event{'' if rate == 1 else 's'}/s")
    if "payload_bytes" not in free:
        parts.append(f"{fmt(base['payload_bytes'])}-B payload")
    if "header_profile" not in free:
        parts.append(f"{base['header_profile']} headers")
    if "poll_interval_s" not in free:
        parts.append(f"poll every {fmt(base['poll_interval_s'])} s")
    if not base.get("keepalive", True):
        parts.append("no keep-alive")
    if "stack" not in free and base.get("stack", "h1") != "h1":
        parts.append(str(base["stack"]))
    return ", ".join(parts)


def no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"not measured in this run:\n{what}",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#666666",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _errorbars(group: pd.DataFrame, col: str) -> np.ndarray | None:
    if (group["repeats"] < 2).all():
        return None
    mean = group[col].to_numpy(dtype=float)
    lo = mean - group[f"{col}__min"].to_numpy(dtype=float)
    hi = group[f"{col}__max"].to_numpy(dtype=float) - mean
    return np.vstack([np.nan_to_num(lo), np.nan_to_num(hi)])


def line_per_transport(
    ax: Axes,
    tt: Transports,
    data: pd.DataFrame,
    x: str,
    y: str,
    *,
    scale_y: float = 1.0,
    linestyle: str = "-",
    hollow: bool = False,
    suffix: str = "",
) -> list[str]:
    """One line per transport (mean of repeats, bars from min to max); returns the transports drawn."""
    drawn = []
    for t in transports_in(data, tt) if not data.empty else []:
        g = data[(data["transport"] == t) & data[y].notna()].sort_values(x)
        if g.empty:
            continue
        err = _errorbars(g, y)
        ax.errorbar(
            g[x],
            g[y] * scale_y,
            yerr=None if err is None else err * scale_y,
            color=tt.colour(t),
            linestyle=linestyle,
            marker=tt.marker(t)[0],
            markersize=tt.marker(t)[1],
            markerfacecolor="white" if hollow else tt.colour(t),
            capsize=2,
            label=tt.label(t) + suffix,
        )
        drawn.append(t)
    return drawn


# 0. The headline: the answer at a glance ----------------------------------------------------------------------


def headline(a: Analysis) -> Figure:
    """Left: bytes on the wire per delivered event at the baseline, one bar per transport stacked by layer (both
    directions). Right: median and p99 latency of the same cells."""
    tt = a.transports
    rows = glance_rows(a)
    fig = Figure(figsize=(11, 1.5 + 0.38 * max(1, len(rows))), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharey=True, width_ratios=[2.1, 1])
    layers = layers_drawn(rows)
    ys = list(range(len(rows)))[::-1]  # the registry's first transport on top
    for y, r in zip(ys, rows, strict=True):
        left = 0.0
        for layer in layers:
            v = r.layers.get(layer.key, 0.0)
            v = 0.0 if math.isnan(v) else v
            colour = tt.colour(r.transport)
            ax1.barh(y, v, left=left, hatch=layer.hatch, height=0.7, **layer_style(colour, layer.alpha))
            left += v
        ax1.annotate(
            f" {fmt(r.bytes_per_event)} B", (left, y), va="center", ha="left", fontsize=8, annotation_clip=False
        )
        for value, filled in ((r.latency_p50_ms, True), (r.latency_p99_ms, False)):
            if not math.isnan(value) and value > 0:
                ax2.plot(
                    [value],
                    [y],
                    marker=tt.marker(r.transport)[0],
                    markersize=8,
                    color=tt.colour(r.transport),
                    markerfacecolor=tt.colour(r.transport) if filled else "white",
                    linestyle="none",
                )
        if not math.isnan(r.latency_p50_ms) and not math.isnan(r.latency_p99_ms):
            ax2.plot([r.latency_p50_ms, r.latency_p99_ms], [y, y], color=tt.colour(r.transport), linewidth=1)
    if rows:
        ax1.set_yticks(ys, [r.label for r in rows])
        ax1.set_xlim(0, max(r.bytes_per_event for r in rows if not math.isnan(r.bytes_per_event)) * 1.18)
    else:
        no_data(ax1, "feed cells at the baseline settings")
    ax1.set_xlabel("bytes on the wire per delivered event (both directions)")
    ax1.set_title("What one event costs on the wire", loc="left")
    ax1.grid(False, axis="y")
    ax1.legend(
        handles=[
            Patch(hatch=layer.hatch, label=layer.label, **layer_style("#555555", layer.alpha)) for layer in layers
        ],
        loc="lower right",
        fontsize=7,
        framealpha=0.9,
    )
    if ax2.has_data():
        ax2.set_xscale("log")
        ax2.legend(
            handles=[
                Line2D([], [], color="#555555", marker="o", linestyle="none", label="p50 (filled)"),
                Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="none", label="p99"),
            ],
            loc="lower right",
            fontsize=7,
            framealpha=0.9,
        )
    else:
        no_data(ax2, "latencies at the baseline")
    ax2.set_xlabel("latency from intended publish time (ms, log)")
    ax2.set_title("How late it arrives", loc="left")
    ax2.grid(False, axis="y")
    fig.suptitle(f"The baseline: {describe(a.base)}", x=0.01, ha="left", fontsize=10)
    return fig


# 1. Header overhead ------------------------------------------------------------------------------------------


def header_overhead(a: Analysis) -> Figure:
    tt = a.transports
    data = slice_cells(a.cells, a.base, free=("payload_bytes", "header_profile", "scenario", "stack"))
    payloads = sorted(data["payload_bytes"].unique()) if not data.empty else []
    stacks = a.run.stacks.order(data["stack"].unique()) if "stack" in data.columns else ["h1"]
    # The baseline scenario and header profile first, then the others measured; within each, a panel per payload
    # size and stack (h1, h1-tls, h2-tls side by side), and no empty panel.
    scenarios = dict.fromkeys([str(a.base["scenario"]), "feed", "echo"])
    profiles = dict.fromkeys([str(a.base["header_profile"]), "minimal", "browser", "custom", "classic2010"])
    panels: list[tuple[str, str, float, str]] = [
        (scenario, profile, p, stack)
        for scenario in scenarios
        for profile in profiles
        for p in payloads
        for stack in stacks
        if _overhead_panel(data, scenario, profile, p, stack).shape[0]
    ]
    ncols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(max(6.0, 4.2 * ncols + 0.5), 3.4 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        scenario, profile, payload, stack = panels[k]
        panel = _overhead_panel(data, scenario, profile, payload, stack)
        ax.set_title(f"{a.run.stacks.label(stack)}\n{scenario}, {profile} headers, {fmt(payload)}-B payload")
        ticks, names, centres, groups = [], [], [], []
        for i, t in enumerate(transports_in(panel, tt)):
            cell = first(panel[panel["transport"] == t])
            for j, direction in enumerate(("down", "up")):
                x = i * 2.6 + j
                bottom = 0.0
                for suffix, layer in LAYERS:
                    v = float(cell[f"{direction}_{suffix}_per_event"])
                    v = 0.0 if math.isnan(v) else v
                    ax.bar(
                        x,
                        v,
                        bottom=bottom,
                        hatch=layer.hatch,
                        linewidth=0.6,
                        width=0.9,
                        **layer_style(tt.colour(t), layer.alpha),
                    )
                    bottom += v
                ax.annotate(
                    fmt(bottom),
                    (x, bottom),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
                ticks.append(x)
                names.append("↓" if direction == "down" else "↑")
            centres.append(i * 2.6 + 0.5)
            groups.append(tt.short(t))
        ax.set_xticks(ticks, names, fontsize=8)
        ax.set_xticks(centres, groups, minor=True, fontsize=8)
        ax.tick_params(axis="x", which="minor", length=0, pad=14)
        ax.grid(False, axis="x", which="both")
        ax.set_ylabel("bytes per delivered event")
    if not panels:
        no_data(axes[0][0], "feed cells at the baseline settings")
    layer_handles = [
        Patch(hatch=layer.hatch, label=layer.label, **layer_style("#555555", layer.alpha)) for _, layer in LAYERS
    ]
    transport_handles = (
        [Patch(color=tt.colour(t), label=tt.label(t)) for t in transports_in(data, tt)] if not data.empty else []
    )
    # As many legend columns as the figure is wide for (three per panel), or the legend is cut at its sides.
    fig.legend(handles=layer_handles + transport_handles, loc="outside lower center", ncol=min(7, 3 * ncols))
    fig.suptitle(
        "Bytes on the wire per delivered event (↓ server→client, ↑ client→server)\n"
        f"{describe(a.base, ('payload_bytes', 'header_profile', 'stack'))}"
    )
    return fig


def _overhead_panel(data: pd.DataFrame, scenario: Any, profile: Any, payload: Any, stack: str) -> pd.DataFrame:
    in_stack = data["stack"] == stack if "stack" in data.columns else stack == "h1"
    return data[
        (data["scenario"] == scenario)
        & (data["header_profile"] == profile)
        & (data["payload_bytes"] == payload)
        & in_stack
    ]


# 2. Bandwidth ------------------------------------------------------------------------------------------------


def bandwidth(a: Analysis) -> Figure:
    tt = a.transports
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    by_rate = slice_cells(a.cells, a.base, free=("rate_hz",))
    drawn = line_per_transport(ax1, tt, by_rate, "events_per_s", "wire_bps_per_client")
    ax1.set_title(f"Per client vs event rate\n{describe(a.base, ('rate_hz',))}")
    ax1.set_xlabel("events published per second")
    ax1.set_ylabel("bits per second per client (both directions)")
    _log_if_positive(ax1, "both")
    ax1.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    if drawn:
        ax1.legend()
    by_clients = slice_cells(a.cells, a.base, free=("clients",))
    drawn = line_per_transport(ax2, tt, by_clients, "clients", "wire_bps_total")
    ax2.set_title(f"All clients together vs number of clients\n{describe(a.base, ('clients',))}")
    ax2.set_xlabel("connected clients")
    ax2.set_ylabel("bits per second, all clients (both directions)")
    _log_if_positive(ax2, "both")
    ax2.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    if drawn:
        ax2.legend()
    fig.suptitle("Bandwidth: TCP payload plus TCP/IP headers (mean of repeats; bars span min–max)")
    return fig


def _log_if_positive(ax: Axes, which: str) -> None:
    """Log axes only when there is something positive to draw (matplotlib warns on an empty log axis)."""
    if not ax.has_data():
        return
    if which in ("x", "both"):
        ax.set_xscale("log")
    if which in ("y", "both"):
        ax.set_yscale("log")


# 3. Latency --------------------------------------------------------------------------------------------------


def latency(a: Analysis) -> Figure:
    tt = a.transports
    echo = slice_cells(a.cells, {**a.base, "scenario": "echo"}, free=())
    panels = 3 if not echo.empty else 2
    fig = Figure(figsize=(5.2 * panels, 4.4), layout="constrained")
    axes = fig.subplots(1, panels)
    interval_ms = float(a.base["poll_interval_s"]) * 1000
    ax = axes[0]
    chosen = slice_cells(a.cells, a.base, free=())
    for t in transports_in(chosen, tt) if not chosen.empty else []:
        cell = first(chosen[chosen["transport"] == t])
        hist = a.merged_latency(int(cell["cell_index"]))
        if hist is None or hist.get_total_count() == 0:
            continue
        xs, ys = cdf_points(hist)
        ax.step(xs, ys, where="post", color=tt.colour(t), label=f"{tt.label(t)} ({fmt(hist.get_total_count())} events)")
    if ax.has_data():
        ax.set_xscale("log")
        ax.axvline(interval_ms, color=tt.colour("poll"), linestyle=":", linewidth=1)
        ax.annotate(
            f"short-poll interval\n{fmt(interval_ms)} ms",
            (interval_ms, 0.05),
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=tt.colour("poll"),
        )
        ax.legend(loc="upper left")
    else:
        no_data(ax, "a feed cell with delivered events")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"CDF of event latency, one cell per transport\n{describe(a.base)}")
    ax.set_xlabel("latency from intended publish time (ms, log)")
    ax.set_ylabel("fraction of events delivered within x")

    ax = axes[1]
    by_rate = slice_cells(a.cells, a.base, free=("rate_hz",))
    drawn = line_per_transport(ax, tt, by_rate, "events_per_s", "latency_p50_ms", suffix=" p50")
    line_per_transport(ax, tt, by_rate, "events_per_s", "latency_p99_ms", linestyle="--", hollow=True, suffix=" p99")
    if drawn:
        ax.axhline(interval_ms, color=tt.colour("poll"), linestyle=":", linewidth=1)
        ax.annotate(
            f"short-poll interval {fmt(interval_ms)} ms",
            (0.01, interval_ms),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=7,
            color=tt.colour("poll"),
        )
        _log_if_positive(ax, "both")
        ax.legend(
            handles=[
                *(Line2D([], [], color=tt.colour(t), marker=tt.marker(t)[0], label=tt.label(t)) for t in drawn),
                Line2D([], [], color="#555555", marker="o", label="p50 (solid line, filled)"),
                Line2D(
                    [],
                    [],
                    color="#555555",
                    marker="o",
                    markerfacecolor="white",
                    linestyle="--",
                    label="p99 (dashed line, hollow)",
                ),
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=3,
            fontsize=7,
        )
    else:
        no_data(ax, "feed cells varying the event rate")
    ax.set_title(f"Median and p99 latency vs event rate\n{describe(a.base, ('rate_hz',))}")
    ax.set_xlabel("events published per second")
    ax.set_ylabel("latency (ms, log)")

    if panels == 3:
        ax = axes[2]
        ts = transports_in(echo, tt)
        positions = np.arange(len(ts))
        for i, t in enumerate(ts):
            cell = first(echo[echo["transport"] == t])
            for j, (col, hatch) in enumerate((("latency_p50_ms", ""), ("latency_p99_ms", "//"))):
                v = float(cell[col])
                ax.bar(
                    positions[i] + (j - 0.5) * 0.4,
                    v,
                    width=0.38,
                    color=tt.colour(t),
                    alpha=1.0 if j == 0 else 0.5,
                    hatch=hatch,
                    edgecolor=tt.colour(t),
                )
                ax.annotate(fmt(v), (positions[i] + (j - 0.5) * 0.4, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(positions, [tt.label(t) for t in ts])
        ax.set_ylabel("round trip from intended send time (ms)")
        ax.set_title(
            "Echo round trip: p50 (solid) and p99 (hatched)\n"
            + describe(a.base, ("rate_hz", "poll_interval_s"))  # neither applies to echo
        )
    fig.suptitle("Latency: how long after its intended time each event reached the client")
    return fig


def cdf_points(hist: Any) -> tuple[list[float], list[float]]:
    """(latency ms, cumulative fraction) at every recorded value of an HDR histogram in microseconds."""
    total = hist.get_total_count()
    xs, ys = [], []
    for item in hist.get_recorded_iterator():
        xs.append(item.value_iterated_to / 1000.0)
        ys.append(item.total_count_to_this_value / total)
    return xs, ys


# 4. Connections ----------------------------------------------------------------------------------------------


def connections(a: Analysis) -> Figure:
    tt = a.transports
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    chosen = slice_cells(a.cells, a.base, free=("keepalive",))
    labels: list[str] = []
    for keepalive in (True, False):
        group = chosen[chosen["keepalive"] == keepalive]
        for t in transports_in(group, tt) if not group.empty else []:
            v = float(first(group[group["transport"] == t])["connections_per_client_per_min"])
            x = len(labels)
            ax1.bar(
                x,
                v,
                color=tt.colour(t),
                hatch="" if keepalive else "xx",
                edgecolor=tt.colour(t),
                alpha=1.0 if keepalive else 0.6,
            )
            ax1.annotate(fmt(v), (x, v), ha="center", va="bottom", fontsize=7)
            labels.append(tt.label(t) + ("" if keepalive else "\nno keep-alive"))
    if labels:
        ax1.set_xticks(range(len(labels)), labels, fontsize=8)
        ax1.set_ylim(bottom=0, top=max(1.0, ax1.get_ylim()[1]))
    else:
        no_data(ax1, "feed cells")
    ax1.set_ylabel("TCP connections opened per client per minute")
    ax1.set_title(f"New connections during the window (the initial connect is before it)\n{describe(a.base)}")
    by_clients = slice_cells(a.cells, a.base, free=("clients",))
    drawn = line_per_transport(ax2, tt, by_clients, "clients", "connections_peak")
    if drawn:
        xs = sorted(by_clients["clients"].unique())
        ax2.plot(xs, xs, color="#999999", linestyle=":", label="one per client")
        _log_if_positive(ax2, "both")
        ax2.legend()
    else:
        no_data(ax2, "feed cells varying clients")
    ax2.set_xlabel("connected clients")
    ax2.set_ylabel("peak concurrent connections at the server")
    ax2.set_title(f"Peak concurrent connections vs clients\n{describe(a.base, ('clients',))}")
    fig.suptitle("Connections: the 'one connection' claim")
    return fig


# 5. Server cost ----------------------------------------------------------------------------------------------


def server_cost(a: Analysis) -> Figure:
    tt = a.transports
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    chosen = slice_cells(a.cells, a.base, free=())
    ts = transports_in(chosen, tt) if not chosen.empty else []
    for i, t in enumerate(ts):
        cell = first(chosen[chosen["transport"] == t])
        v = float(cell["server_cpu_ms_per_1k_events"])
        err = None
        if cell["repeats"] >= 2:
            err = [
                [v - float(cell["server_cpu_ms_per_1k_events__min"])],
                [float(cell["server_cpu_ms_per_1k_events__max"]) - v],
            ]
        below = cpu_ms_per_thousand_events_bound(cell)
        if math.isnan(below):
            ax1.bar(i, v, yerr=err, color=tt.colour(t), capsize=3)
        else:  # the CPU read 0 ticks: an outline up to the bound it is under, not a bar of 0
            ax1.bar(i, below, fill=False, edgecolor=tt.colour(t), linestyle="--", linewidth=1.2)
            v = below
        label = fmt_bound(v, below)
        ax1.annotate(label, (i, v), ha="center", va="bottom", fontsize=7, xytext=(6, 0), textcoords="offset points")
    if ts:
        ax1.set_xticks(range(len(ts)), [tt.label(t) for t in ts])
    else:
        no_data(ax1, "feed cells")
    ax1.set_ylabel("server CPU ms per 1,000 delivered events")
    ax1.set_title(f"Server CPU per 1,000 delivered events\n{describe(a.base)}")
    by_clients = slice_cells(a.cells, a.base, free=("clients",))
    ts2 = transports_in(by_clients, tt) if not by_clients.empty else []
    marginal_all = True
    for i, t in enumerate(ts2):
        g = by_clients[by_clients["transport"] == t]
        per_client, marginal = memory_per_client_bytes(g["clients"].tolist(), g["server_rss_bytes"].tolist())
        marginal_all &= marginal
        ax2.bar(i, per_client / 1024, color=tt.colour(t), hatch="" if marginal else "..", edgecolor=tt.colour(t))
        ax2.annotate(fmt(per_client / 1024), (i, per_client / 1024), ha="center", va="bottom", fontsize=7)
    if ts2:
        ax2.set_xticks(range(len(ts2)), [tt.label(t) for t in ts2])
    else:
        no_data(ax2, "feed cells varying clients")
    ax2.set_ylabel("server memory per connected client (KiB)")
    how = (
        "slope of server RSS against clients"
        if marginal_all
        else "hatched: RSS ÷ clients (one client count only; includes the process baseline)"
    )
    ax2.set_title(f"Memory per connected client ({how})\n{describe(a.base, ('clients',))}")
    fig.suptitle("Server cost")
    return fig


# 6. Scaling --------------------------------------------------------------------------------------------------


def scaling(a: Analysis) -> Figure:
    tt = a.transports
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    by_clients = slice_cells(a.cells, a.base, free=("clients",))
    for ax, col, ylabel, fmt_unit, title in (
        (ax1, "wire_bps_total", "bytes per second on the wire, all clients", "B/s", "Bytes/s on the wire vs clients"),
        (ax2, "server_cpu_pct", "server CPU (% of one core)", "%", "Server CPU vs clients"),
    ):
        scale = 1 / 8 if col == "wire_bps_total" else 1.0
        drawn = []
        for t in transports_in(by_clients, tt) if not by_clients.empty else []:
            g = by_clients[(by_clients["transport"] == t) & (by_clients[col] > 0)].sort_values("clients")
            if g.empty:
                continue
            k = loglog_slope(g["clients"].tolist(), g[col].tolist())
            slope = f", slope {k:.2f}" if not math.isnan(k) else ""
            marker, size = tt.marker(t)
            ax.plot(
                g["clients"],
                g[col] * scale,
                color=tt.colour(t),
                marker=marker,
                markersize=size,
                label=f"{tt.label(t)}{slope}",
            )
            drawn.append(t)
        if drawn:
            _log_if_positive(ax, "both")
            ax.legend(title="transport, fitted exponent (1 = linear)")
        else:
            no_data(ax, "feed cells varying clients")
        ax.set_xlabel("connected clients (log)")
        ax.set_ylabel(f"{ylabel} ({fmt_unit}, log)")
        if col == "wire_bps_total":
            ax.yaxis.set_major_formatter(EngFormatter(unit="B/s"))
        ax.set_title(f"{title}\n{describe(a.base, ('clients',))}")
    fig.suptitle("Scaling: a straight line of slope 1 on these log-log axes means cost grows linearly with clients")
    return fig


# 7. Capacity -------------------------------------------------------------------------------------------------

STACK_LINESTYLES = ("-", "--", ":", "-.")


def reference_line(ax: Axes, y: float, label: str) -> None:
    """A dashed horizontal line named in the legend (a label on the plot would cover the points near it), then log
    axes and the legend (the capacity panels)."""
    ax.axhline(y, color="#555555", linestyle="--", linewidth=1, label=label)
    _log_if_positive(ax, "both")
    ax.legend(loc="best", fontsize=7)


def capacity(a: Analysis) -> Figure:
    """Left: the worst repeat's p99 against clients, with the capacity threshold; filled markers passed, hollow ones
    failed (over the threshold, lost messages, saturated or stopped). Right: the server's fan-out, deliveries per
    server CPU-second, against clients, with the fan-out target (100,000)."""
    tt = a.transports
    caps = capacities(a)
    stacks = list(dict.fromkeys(c.stack for c in caps))
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for c in caps:
        colour = tt.colour(c.transport)
        marker, size = tt.marker(c.transport)
        style = STACK_LINESTYLES[stacks.index(c.stack) % len(STACK_LINESTYLES)]
        label = tt.label(c.transport) + (f", {c.stack_label}" if len(stacks) > 1 else "")
        xs = [s.clients for s in c.sizes]
        ax1.plot(
            xs, [s.p99_ms for s in c.sizes], color=colour, linestyle=style, marker=marker, markersize=size + 1,
            label=label,
        )  # fmt: skip
        failed = [s for s in c.sizes if not s.passed]
        if failed:
            ax1.plot(
                [s.clients for s in failed], [s.p99_ms for s in failed], marker=marker, markersize=size + 1,
                linestyle="none", color=colour, markerfacecolor="white",
            )  # fmt: skip
        if c.capacity is not None and c.stopped is not None:
            ax1.annotate(
                fmt(c.capacity.clients),
                (c.capacity.clients, c.capacity.p99_ms),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=colour,
            )
        fanout = [(s.clients, s.deliveries_per_cpu_s) for s in c.sizes if not math.isnan(s.deliveries_per_cpu_s.value)]
        if fanout:
            ax2.plot(
                [x for x, _ in fanout], [f.value for _, f in fanout], color=colour, linestyle=style, marker=marker,
                markersize=size + 1, label=label,
            )  # fmt: skip
            bounds = [(x, f.value) for x, f in fanout if f.relation]
            if bounds:
                ax2.plot(
                    [x for x, _ in bounds], [v for _, v in bounds], marker=marker, markersize=size + 1,
                    linestyle="none", color=colour, markerfacecolor="white",
                )  # fmt: skip
    threshold_ms = a.capacity_p99_s * 1000
    if ax1.has_data():
        reference_line(ax1, threshold_ms, f"threshold: p99 {fmt(a.capacity_p99_s)} s")
        for ms in sorted({s.threshold_ms for c in caps for s in c.sizes} - {threshold_ms}):
            ax1.axhline(ms, color="#555555", linestyle=":", linewidth=1, label=f"polling: {fmt(ms / 1000)} s")
        ax1.legend(loc="best", fontsize=7)
    else:
        no_data(ax1, "feed cells varying clients")
    ax1.set_xlabel("connected clients (log)")
    ax1.set_ylabel("p99 latency, worst repeat (ms, log)")
    ax1.set_title(
        "p99 latency vs clients (filled: passed; hollow: failed)\n" + describe(a.base, ("clients", "stack")),
    )
    if ax2.has_data():
        names = ", ".join(map(tt.label, tt.streaming()))
        target = f"target {fmt(FANOUT_TARGET_PER_CPU_S)} ({names} at {fmt(FANOUT_TARGET_CLIENTS)} clients)"
        reference_line(ax2, FANOUT_TARGET_PER_CPU_S, target)
    else:
        no_data(ax2, "server deliveries and CPU (server_deliveries, server_cpu_s)")
    ax2.set_xlabel("connected clients (log)")
    ax2.set_ylabel("deliveries per server CPU-second (log)")
    ax2.set_title(
        "Server fan-out: events handed to client sockets per CPU-second\n(hollow: a lower bound, the CPU read 0)"
    )
    fig.suptitle("Capacity: where each transport stops")
    return fig


CHARTS: dict[str, Callable[[Analysis], Figure]] = {
    "headline": headline,
    "header_overhead": header_overhead,
    "bandwidth": bandwidth,
    "latency": latency,
    "connections": connections,
    "server_cost": server_cost,
    "scaling": scaling,
    "capacity": capacity,
}
