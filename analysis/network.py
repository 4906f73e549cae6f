"""The network chart: latency against the path's round-trip time, one panel per transport, beside what
``analysis.theory`` says it should be, and a bandwidth panel (latency as the link narrows, with each
transport's own measured load marked on it).

Reads the ``[network]`` columns of summary.csv (``rtt_ms``, ``bandwidth_mbit``, ``loss_pct``,
``path_rtt_ms_p50``); runs made before they existed, or without any emulated cell, get no network chart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import theory
from analysis.fmt import fmt
from analysis.metrics import PARAMETERS
from analysis.model import Analysis

NETWORK_KEYS = ("rtt_ms", "bandwidth_mbit", "loss_pct")
PERCENTILES = (("latency_p50_ms", 50.0, "-", "p50"), ("latency_p99_ms", 99.0, "--", "p99"))
ETHERNET_HEADER_BYTES = 14  # what tbf counts on a veth beyond the IP packet
TCPIP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps 12 (loadgen.wire.tcpip_header_bytes's assumption)


def has_network(a: Analysis) -> bool:
    """Some cell of the run crossed an emulated path."""
    rows = a.rows
    if not all(k in rows.columns for k in NETWORK_KEYS):
        return False
    values = pd.concat([pd.to_numeric(rows[k], errors="coerce") for k in NETWORK_KEYS])
    return bool((values.fillna(0) > 0).any())


def link_load_mbit(tcp_bytes: float, segments: float, duration_s: float) -> float:
    """Megabits per second one direction put on the link, as tbf counts them: TCP payload plus, per segment,
    its TCP/IP headers and the Ethernet header (derived from the measured bytes and segment counts)."""
    if not duration_s > 0:
        return math.nan
    return (tcp_bytes + segments * (TCPIP_HEADER_BYTES + ETHERNET_HEADER_BYTES)) * 8 / duration_s / 1e6


def expected_latency_ms(
    polls: bool, holds_requests: bool, rtt_ms: float, pct: float, poll_interval_ms: float, event_interval_ms: float
) -> float:
    """The path's added latency for a transport of this kind (``analysis.theory``), percentile ``pct``."""
    if polls:
        return theory.shortpoll_latency_ms(rtt_ms, poll_interval_ms, pct) - pct / 100 * poll_interval_ms
    if holds_requests:
        return theory.longpoll_latency_ms(rtt_ms, event_interval_ms, pct)
    return theory.push_latency_ms(rtt_ms)


@dataclass(frozen=True)
class Series:
    transport: str
    variant: str  # "" for the baseline; e.g. "no keep-alive", "stack=h2-tls"
    points: pd.DataFrame  # one row per cell: network values and latency means


def network_cells(a: Analysis) -> pd.DataFrame:
    """One row per measured cell: its parameters, network values, variant (what else differs from the
    baseline besides the network and the transport) and mean latency over its repeats."""
    rows = a.rows[a.rows["status"] != "failed"].copy()
    for k in (*NETWORK_KEYS, "path_rtt_ms_p50"):
        rows[k] = pd.to_numeric(rows[k], errors="coerce") if k in rows.columns else math.nan
    out = []
    for index, group in rows.groupby("cell_index", sort=True):
        head = group.iloc[0]
        extra = json.loads(head["varied_extra"]) if head["varied_extra"] else {}
        rest = {k: v for k, v in extra.items() if k.split(".")[-1] not in NETWORK_KEYS}
        differs = [
            p
            for p in PARAMETERS
            if p not in ("transport", "varied_extra", "keepalive") and p in a.base and head[p] != a.base[p]
        ]
        variant = ", ".join(
            [*(["no keep-alive"] if not head["keepalive"] else []), *(f"{k}={v}" for k, v in sorted(rest.items()))]
        )
        out.append(
            {
                "cell_index": index,
                "transport": head["transport"],
                "scenario": head["scenario"],
                "variant": variant,
                "off_baseline": bool(differs),
                **{k: float(group[k].mean()) for k in (*NETWORK_KEYS, "path_rtt_ms_p50")},
                **{col: float(group[col].mean()) for col, *_ in PERCENTILES},
                "poll_interval_ms": float(head["poll_interval_s"]) * 1000,
                "event_interval_ms": 1000 / (float(head["rate_hz"]) * float(head["burst"])),
                "down_mbit": float(
                    group.apply(
                        lambda r: link_load_mbit(r["bytes_down_tcp"], r["tcp_segments_down"], r["duration_s"]), axis=1
                    ).mean()
                ),
                "up_mbit": float(
                    group.apply(
                        lambda r: link_load_mbit(r["bytes_up_tcp"], r["tcp_segments_up"], r["duration_s"]), axis=1
                    ).mean()
                ),
            }
        )
    return pd.DataFrame(out)


def _series(cells: pd.DataFrame, a: Analysis, x: str) -> list[Series]:
    found = []
    for (transport, variant), group in cells.groupby(["transport", "variant"], sort=False):
        found.append(Series(str(transport), str(variant), group.sort_values(x)))
    order = a.transports.order(cells["transport"]) if not cells.empty else []
    return sorted(found, key=lambda s: (order.index(s.transport) if s.transport in order else 99, s.variant))


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, f"not measured in this run:\n{text}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def network_chart(a: Analysis) -> Figure:
    tt = a.transports
    cells = network_cells(a)
    feed = cells[(cells["scenario"] == "feed") & ~cells["off_baseline"]] if not cells.empty else cells
    by_rtt = feed[(feed["bandwidth_mbit"] == 0) & (feed["loss_pct"] == 0)] if not feed.empty else feed
    transports = tt.order(by_rtt["transport"]) if not by_rtt.empty else []
    panels = max(1, len(transports)) + 1
    fig = Figure(figsize=(4.0 * panels, 4.6), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    for ax, t in zip(axes, transports, strict=False):
        info = tt.info(t)
        styles = ["o", "s", "^", "D", "v"]
        handles = []
        for i, s in enumerate(x for x in _series(by_rtt, a, "rtt_ms") if x.transport == t):
            pts = s.points
            loopback = pts[pts["rtt_ms"] == 0]
            label = tt.label(t) + (f" ({s.variant})" if s.variant else "")
            alpha = 1.0 if not s.variant else 0.6
            for col, pct, style, _name in PERCENTILES:
                ax.plot(
                    pts["rtt_ms"], pts[col], linestyle=style, marker=styles[i % len(styles)], color=tt.colour(t),
                    alpha=alpha, markerfacecolor=tt.colour(t) if pct == 50 else "white",
                )  # fmt: skip
                if i > 0:
                    continue  # one set of theoretical lines per panel: the first (baseline) variant's
                base_ms = float(loopback[col].iloc[0]) if not loopback.empty else 0.0
                top = float(pts["rtt_ms"].max())
                xs = [top * k / 400 for k in range(401)]  # dense: long polling's line has a step at RTT = interval
                ys = [
                    base_ms
                    + expected_latency_ms(
                        info.polls,
                        info.holds_requests,
                        x,
                        pct,
                        float(pts["poll_interval_ms"].iloc[0]),
                        float(pts["event_interval_ms"].iloc[0]),
                    )
                    for x in xs
                ]
                ax.plot(xs, ys, linestyle=":", color="#333333", linewidth=0.9, alpha=alpha)
            handles.append(Line2D([], [], color=tt.colour(t), marker=styles[i % len(styles)], label=label))
        handles += [
            Line2D([], [], color="#555555", linestyle="-", label="measured p50"),
            Line2D([], [], color="#555555", linestyle="--", marker="o", markerfacecolor="white", label="measured p99"),
            Line2D([], [], color="#333333", linestyle=":", label="theory (+ loopback figure)"),
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=7)
        ax.set_title(f"{tt.label(t)}: {_formula_text(info.polls, info.holds_requests)}")
        ax.set_xlabel("added round-trip time, network.rtt_ms (ms)")
        ax.set_ylabel("latency from intended publish time (ms)")
    if not transports:
        _no_data(axes[0], "feed cells varying network.rtt_ms")
    _bandwidth_panel(axes[-1], a, feed)
    fig.suptitle(
        "Latency over an emulated path: measured points, theoretical lines (analysis.theory) "
        f"— {fmt(a.base.get('clients'))} clients, {fmt(1000 / float(a.base.get('rate_hz', 1)))} ms between events"
    )
    return fig


def _formula_text(polls: bool, holds_requests: bool) -> str:
    if polls:
        return "interval/2 + RTT/2 (p50)"
    if holds_requests:
        return "RTT/2; up to 3 × RTT/2 when events come faster than RTT"
    return "RTT/2"


def _bandwidth_panel(ax: Axes, a: Analysis, feed: pd.DataFrame) -> None:
    """p50/p99 latency against the link rate at one round trip; dotted: each transport's busier direction's
    load measured on the same path without a limit (a link slower than that must queue or drop)."""
    tt = a.transports
    limited = feed[feed["bandwidth_mbit"] > 0] if not feed.empty else feed
    if limited.empty:
        _no_data(ax, "feed cells varying network.bandwidth_mbit")
        return
    rtt = float(limited["rtt_ms"].mode().iloc[0])
    same = feed[(feed["rtt_ms"] == rtt) & (feed["loss_pct"] == 0)]
    top = float(limited["bandwidth_mbit"].max())
    for s in _series(same[same["bandwidth_mbit"] > 0], a, "bandwidth_mbit"):
        pts = s.points
        for col, pct, style, _ in PERCENTILES:
            ax.plot(
                pts["bandwidth_mbit"], pts[col], linestyle=style, marker=tt.marker(s.transport)[0],
                color=tt.colour(s.transport), markerfacecolor=tt.colour(s.transport) if pct == 50 else "white",
                label=(tt.label(s.transport) + (f" ({s.variant})" if s.variant else "")) if pct == 50 else None,
            )  # fmt: skip
        free = same[(same["transport"] == s.transport) & (same["variant"] == s.variant) & (same["bandwidth_mbit"] == 0)]
        if not free.empty:
            load = max(float(free["down_mbit"].iloc[0]), float(free["up_mbit"].iloc[0]))
            if load <= top * 2:
                ax.axvline(load, color=tt.colour(s.transport), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    rates = sorted(limited["bandwidth_mbit"].unique())
    ax.set_xticks(rates, [fmt(r) for r in rates])
    ax.minorticks_off()
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"Latency vs link rate (rtt_ms = {fmt(rtt)})\ndotted: the transport's load without a limit")
    ax.set_xlabel("bandwidth per direction (Mbit/s, log)")
    ax.set_ylabel("latency p50 (solid) / p99 (dashed), ms (log)")


CAPTION = (
    "Each panel but the last: one transport's median (solid, filled) and p99 (dashed, hollow) latency as the "
    "emulated path's round-trip time grows (bandwidth unlimited, no loss); dotted grey: what analysis.theory "
    "predicts, added to the same transport's loopback figure (WebSocket and SSE: RTT/2; long polling: RTT/2 while "
    "events are a round trip apart or more, else up to 3 × RTT/2; short polling: RTT/2 on top of waiting for the "
    "next poll). Last panel: latency as the link narrows at one round-trip time; a dotted vertical line marks the "
    "load that transport put on its busier direction without a limit (derived from its TCP bytes and segments), "
    "so a link left of it must queue or drop. The path's measured round trip is in summary.csv (path_rtt_ms_p50)."
)
