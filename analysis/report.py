"""The HTML report: one self-contained page (charts embedded as base64 PNG on screen, SVG in print).

The first screen answers the question (``glance_html``: the headline chart, one row per transport, the three
verdicts as badges); the reasoning, the other charts and every number follow, long explanations folded.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from analysis.capacity import (
    FANOUT_TARGET_CLIENTS,
    FANOUT_TARGET_PER_CPU_S,
    Capacity,
    capacities,
    fanout_met,
    fanout_target_applies,
    has_sweep,
)
from analysis.classic import (
    CLIENT_COUNTS,
    REFERENCE_CITATION,
    REFERENCE_POLL_HEADER_BYTES,
    REFERENCE_WS_FRAME_BYTES,
    ClassicRow,
    classic_rows,
    polling_to_websocket,
    reference_case,
)
from analysis.fmt import fmt, fmt_bound, fmt_duration
from analysis.glance import REFERENCE_TRANSPORT, GlanceRow, cpu_ms_per_thousand_events_bound, glance_rows
from analysis.metrics import HEADLINES, cpu_resolution_s, records
from analysis.model import Analysis, configured_capacity_p99_s
from analysis.network import CAPTION as NETWORK_CAPTION
from analysis.results import SUMMARY_COLUMNS
from analysis.verdicts import Verdict, describe_cell, verdicts, warnings

# How to read each chart: shown under it in the report (and repeated in the README).
CAPTIONS = {
    "network": NETWORK_CAPTION,
    "header_overhead": (
        "Bytes on the wire per delivered event. Each pair of bars is one transport: ↓ what the server sent, ↑ what "
        "the client sent. Solid: the event payload itself; hatched: HTTP request/response lines and headers, JSON or "
        "SSE wrappers, WebSocket frame headers and empty poll answers; dotted: TCP/IP headers (including bare "
        "acknowledgements). Columns are payload sizes, rows are scenario and header profile. The lower the bar, the "
        "less it costs to deliver one event."
    ),
    "bandwidth": (
        "Left: what one client costs in bits per second as the publisher speeds up; polling costs something even "
        "when nothing happens, push costs grow with the events. Right: all clients together, as their number grows. "
        "Points are means of the repeats; bars span the fastest to the slowest repeat."
    ),
    "latency": (
        "Left: the share of events that arrived within x milliseconds of their intended publish time, for one cell "
        "per transport (further left and steeper is better). Middle: median (solid) and p99 (dashed) latency as the "
        "event rate changes. The dotted line marks the short-poll interval: a polled event waits up to one interval, "
        "half of one on average. Right, when measured: echo round trips."
    ),
    "connections": (
        "Left: new TCP connections opened per client per minute inside the measured window (the first connection is "
        "made before it, so a transport that keeps its connection shows 0). Right: the most connections open at the "
        "server at once; the dotted line is one per client."
    ),
    "server_cost": (
        "Left: server CPU time spent per 1,000 delivered events (lower is cheaper); a dashed outline labelled '< x' "
        "had its CPU read 0 in every repeat (its counters' resolution: 10-ms clock ticks for a server that does not say "
        "otherwise), so all that is known is that it was under x. Right: server memory per "
        "connected client, from how RSS grows with the number of clients."
    ),
    "scaling": (
        "Both axes logarithmic: a straight line means cost follows a power of the number of clients; the fitted "
        "exponent is in the legend (1 = linear, what the classic table assumes)."
    ),
    "capacity": (
        "Left: the worst repeat's p99 latency at each client count, one line per transport; the dashed line is the "
        "threshold (a polling transport is judged against the dotted one: the threshold plus its poll interval). Filled markers passed (p99 under the threshold, nothing lost, load generator unsaturated), "
        "hollow ones failed; the number above a point is the transport's capacity. Right: the server's fan-out, "
        "deliveries per server CPU-second (server_deliveries ÷ server_cpu_s), with the fan-out target (100,000); hollow: a lower "
        "bound (the server's CPU read 0 in that window)."
    ),
}
TITLES = {
    "headline": "The answer at a glance",
    "header_overhead": "1. Header overhead",
    "bandwidth": "2. Bandwidth",
    "latency": "3. Latency",
    "connections": "4. Connections",
    "server_cost": "5. Server cost",
    "scaling": "6. Scaling",
    "network": "7. Network: latency against round-trip time and bandwidth",
    "capacity": "Capacity chart",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.45em;margin:.2em 0}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.lead{margin:.2em 0 .6em;color:#444}
#glance figure{margin:.4em 0}#glance figcaption{font-size:.85em}
.badges{display:flex;flex-wrap:wrap;gap:.4em 1em;margin:.5em 0;align-items:center}
.badge{display:inline-block;padding:.15em .6em;border-radius:1em;border:2px solid #999;color:#222;text-decoration:none;
font-size:.9em;background:#fafafa}.badge b{text-transform:uppercase;font-size:.85em}
.badge.holds{border-color:#009E73;background:#e6f5ef}.badge.partly-holds{border-color:#E69F00;background:#fdf3e1}
.badge.does-not-hold{border-color:#D55E00;background:#fbe9e1}
details{margin:.4em 0}summary{cursor:pointer}dd,li,p{overflow-wrap:anywhere}
.print-only{display:none}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}td.text,th.text{text-align:left}
td.wrap{white-space:normal;min-width:18em}
.scroll{overflow-x:auto;max-width:100%}
.verdict{border-left:4px solid #999;padding:.3em 1em;margin:1em 0;background:#fafafa}
.holds{border-color:#009E73}.partly-holds{border-color:#E69F00}.does-not-hold{border-color:#D55E00}
.outcome{font-weight:bold;text-transform:uppercase;font-size:.85em}
.warn{color:#8a4b00}.banner{background:#fff4e0;border:1px solid #e6b35a;padding:.5em 1em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto}figcaption{color:#444;font-size:.92em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2em 1em}dt{font-weight:bold}dd{margin:0}
@page{size:A4;margin:12mm}
@media print{
body{max-width:none;margin:0;padding:0;font-size:9.5pt}
.screen-only{display:none}.print-only{display:block}
figure,.verdict,tr{break-inside:avoid}h2,h3{break-after:avoid}
.scroll{overflow:visible}table{font-size:7pt}th,td{white-space:normal;overflow-wrap:anywhere}td.wrap{min-width:10em}
a{color:inherit;text-decoration:none}pre{white-space:pre-wrap}
}
"""

# Printing: folded explanations are printed unfolded (and folded again afterwards).
PRINT_SCRIPT = """
<script>
(function () {
  var opened = [];
  addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("details:not([open])"), function (d) {
      d.open = true; return true;
    });
  });
  addEventListener("afterprint", function () { opened.forEach(function (d) { d.open = false; }); opened = []; });
})();
</script>
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    table_id: str = "",
    text_cols: Sequence[int] = (),
    keys: Sequence[str] | None = None,
    wrap_cols: Sequence[int] = (),
) -> str:
    """An HTML table; numbers through ``fmt``; ``keys`` become data-col attributes (what the tests read);
    ``wrap_cols``: text columns of sentences, wrapped instead of widening the table."""
    out = [f'<div class="scroll"><table{f" id={chr(34)}{table_id}{chr(34)}" if table_id else ""}><thead><tr>']
    out += [f'<th class="{"text" if i in text_cols else ""}">{esc(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, v in enumerate(row):
            cls = ' class="text wrap"' if i in wrap_cols else ' class="text"' if i in text_cols else ""
            key = f' data-col="{esc(keys[i])}"' if keys else ""
            out.append(f"<td{cls}{key}>{esc(fmt(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def run_length(meta: Mapping[str, Any]) -> str:
    """' (8 min 6 s)' from run.json's ISO start and end times, or '' when either is missing."""
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(meta["started_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(meta["ended_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return ""
    seconds = int((end - start).total_seconds())
    return f" ({seconds // 60} min {seconds % 60} s)"


def server_description(meta: dict[str, Any]) -> str:
    """Which server was measured, and whether its own counters were: run.json's ``target``."""
    target = meta.get("target") or {}
    if not target.get("external"):
        return "started by the load generator for each cell (python -m servers); server columns from its /stats"
    if target.get("measured"):
        return f"external ({target.get('url')}), measured: its /stats holds pushbench's counters"
    return (
        f"external, unmeasured ({target.get('url')}): it has no /stats with pushbench's counters, so the "
        "server-side columns (CPU, memory, deliveries, late ticks) are empty"
    )


def load_generator_description(meta: dict[str, Any]) -> str:
    """Where the client shards ran: run.json's ``executor`` and the hosts its cells' shards reported."""
    executor = meta.get("executor") or {"kind": "local"}
    if executor.get("kind") != "dask":
        return "local worker processes on the machine above"
    hosts = sorted(
        {
            f"{h.get('hostname', '?')} ({h.get('address')})"
            for cell in meta.get("cells", [])
            for w in cell.get("workers") or []
            if isinstance(h := w.get("host"), dict)
        }
    )
    return (
        f"Dask cluster {executor.get('scheduler')}, {executor.get('shard_slots', '?')} shard slots; shards ran on "
        + (", ".join(hosts) or "no host")
    )


def gc_description(meta: dict[str, Any]) -> str:
    """CPython's cyclic collector in the server and the client workers (``server.cyclic_gc``, ``load.cyclic_gc``),
    as the cells ran them."""

    def state(cell: dict[str, Any], section: str) -> str:
        value = (cell.get(section) or {}).get("cyclic_gc")
        return "not recorded" if value is None else ("on" if value else "off")

    states = dict.fromkeys(
        f"server {state(c, 'server')}, client workers {state(c, 'load')}" for c in meta.get("cells", [])
    )
    return "CPython's cyclic collector: " + ("; ".join(states) or "no cell") + " (server.cyclic_gc, load.cyclic_gc)"


def what_was_run(a: Analysis) -> str:
    meta = a.run.meta
    machine = meta.get("machine", {})
    packages = meta.get("packages") or {}
    commit = meta.get("git_commit", "unknown")
    items = [
        ("Run", a.run.name),
        (
            "Config",
            f"{meta.get('config_source', 'unknown')}"
            + (f" with --set {' '.join(meta['overrides'])}" if meta.get("overrides") else ""),
        ),
        ("Started / ended (UTC)", f"{meta.get('started_at', '?')} → {meta.get('ended_at', '?')}{run_length(meta)}"),
        ("Cells", f"{len(a.cells)} cells, {len(a.rows)} measured windows (cells × repeats)"),
        (
            "Machine",
            f"{machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} CPUs, "
            f"{fmt(float(machine.get('memory_bytes', 0)) / 2**30)} GiB, {machine.get('os', '?')} "
            f"{machine.get('kernel', '')}, host {machine.get('hostname', '?')}",
        ),
        (
            "Python and packages",
            f"Python {meta.get('python', '?')}; " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())),
        ),
        ("Server", server_description(meta)),
        ("Load generator", load_generator_description(meta)),
        ("Garbage collection", gc_description(meta)),
        ("Git commit", f"{commit}" + (" (uncommitted changes)" if meta.get("git_dirty") else "")),
        (
            "Header profiles",
            "; ".join(
                f"{k}: {fmt(v.get('request_header_bytes'))} B of request headers"
                for k, v in (meta.get("header_profiles") or {}).items()
                if isinstance(v, dict)
            ),
        ),
        (
            "Baseline",
            "charts hold these fixed while one factor varies: "
            + ", ".join(f"{k} = {fmt(v) if v != '' else '(none)'}" for k, v in a.base.items()),
        ),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    config = json.dumps(meta.get("config", {}), indent=2, sort_keys=True)
    return (
        f"<h2 id='run'>What was run</h2><dl>{dl}</dl>"
        f"<details><summary>Resolved config</summary><pre>{esc(config)}</pre></details>"
    )


def claim_name(v: Verdict) -> str:
    """'One connection' from 'One connection: a push transport keeps ...'."""
    return v.claim.split(":", 1)[0]


def verdict_id(v: Verdict) -> str:
    return "verdict-" + "-".join(claim_name(v).lower().split())


def verdict_html(v: Verdict) -> str:
    cls = v.outcome.replace(" ", "-")
    return (
        f'<div class="verdict {cls}" id="{verdict_id(v)}"><p><b>{esc(v.claim)}</b> '
        f'<span class="outcome">{esc(v.outcome)}</span></p><p>{esc(v.text)}</p></div>'
    )


def badge_html(v: Verdict) -> str:
    cls = v.outcome.replace(" ", "-")
    return f'<a class="badge {cls}" href="#{verdict_id(v)}">{esc(claim_name(v))}: <b>{esc(v.outcome)}</b></a>'


def images_html(name: str, svg: bytes, png: bytes) -> str:
    # PNG on screen: browsers drop matplotlib's SVG hatch patterns in <img>, and the hatching tells payload
    # from overhead. SVG in print, where a PNG's pixels would show.
    alt = esc(f"{TITLES.get(name, name)} chart")
    return (
        f'<img class="screen-only" alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f'<img class="print-only" alt="{alt}" src="data:image/svg+xml;base64,{base64.b64encode(svg).decode("ascii")}">'
    )


def chart_html(name: str, svg: bytes, png: bytes) -> str:
    return (
        f'<figure id="chart-{name}"><h3>{esc(TITLES.get(name, name))}</h3>{images_html(name, svg, png)}'
        f"<figcaption>{esc(CAPTIONS.get(name, ''))} Files: charts/{name}.svg, charts/{name}.png.</figcaption>"
        "</figure>"
    )


def glance_table(rows: list[GlanceRow]) -> str:
    headers = [
        "transport",
        "bytes per event",
        "× WebSocket",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "connections per client",
        "new connections per client per min",
        "server CPU per 1,000 events (ms)",
    ]
    keys = [
        "transport",
        "bytes_per_event",
        "ratio_to_ws",
        "latency_p50_ms",
        "latency_p99_ms",
        "connections_per_client",
        "connections_per_client_per_min",
        "server_cpu_ms_per_1k_events",
    ]
    body = [
        [
            r.label,
            r.bytes_per_event,
            r.ratio_to_reference,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.connections_per_client,
            r.connections_opened_per_client_per_min,
            fmt_bound(r.server_cpu_ms_per_1k_events, r.server_cpu_ms_per_1k_events_below),
        ]
        for r in rows
    ]
    return table(headers, body, table_id="glance", text_cols=(0,), keys=keys)


def glance_html(a: Analysis, charts: Mapping[str, tuple[bytes, bytes]], found_verdicts: list[Verdict]) -> str:
    """The first screen: the headline chart, one row per transport, and the verdicts as badges."""
    rows = glance_rows(a)
    chart = ""
    if "headline" in charts:
        svg, png = charts["headline"]
        chart = (
            f'<figure id="chart-headline">{images_html("headline", svg, png)}<figcaption>The bytes one delivered '
            "event cost on the wire at the baseline (both directions, mean of the repeats), by layer: payload, HTTP "
            "or frame overhead, TLS when the stack has it, TCP/IP headers (derived from segment counts). Right: "
            "median (filled) and p99 (hollow) latency from the intended publish time.</figcaption></figure>"
        )
    reference = next((r.label for r in rows if r.transport == REFERENCE_TRANSPORT), "WebSocket")
    return (
        "<section id='glance'><div class='badges'><span>The three claims:</span>"
        + "".join(badge_html(v) for v in found_verdicts)
        + "</div>"
        + chart
        + (glance_table(rows) if rows else "<p>No feed cell at the baseline settings.</p>")
        + f"<p class='note'>× {esc(reference)}: bytes per event divided by {esc(reference)}'s. Connections per "
        "client: the most open at the server at once ÷ clients; new connections: opened inside the window. Server "
        "CPU per 1,000 events: '&lt; x' when the server's CPU read 0 in every repeat's window (user and system time "
        f"each count whole steps of {fmt_duration(a.cpu_unit_s)}, so under {fmt_duration(cpu_resolution_s(a.cpu_unit_s))}): x is that "
        "bound ÷ the events delivered. Files: charts/headline.svg, charts/headline.png.</p>"
        + capacity_summary_html(a)
        + "</section>"
    )


def classic_html(rows: list[ClassicRow]) -> str:
    # A "measured at n" column only for the client counts some row measured (a run of 10,000 clients, say).
    measured_at = [
        i for i in range(len(CLIENT_COUNTS)) if any(not math.isnan(r.measured_overhead_mbps[i]) for r in rows)
    ]
    headers = ["transport", "header profile", "cells", "overhead B/s per client"]
    keys = ["transport", "header_profile", "cell_ids", "overhead_bytes_per_client_per_s"]
    for i, n in enumerate(CLIENT_COUNTS):
        headers.append(f"{fmt(n)} clients, extrapolated from the cells (Mbps)")
        keys.append(f"overhead_mbps_{n}")
        if i in measured_at:
            headers.append(f"{fmt(n)} clients, measured with {fmt(n)} clients (Mbps)")
            keys.append(f"measured_overhead_mbps_{n}")
        headers.append(f"{fmt(n)} clients, reference (Mbps)")
        keys.append(f"reference_mbps_{n}")
    headers.append(f"all bytes at {fmt(CLIENT_COUNTS[-1])} clients, extrapolated (Mbps)")
    keys.append(f"wire_mbps_{CLIENT_COUNTS[-1]}")
    blocks = []
    ratios = polling_to_websocket(rows)
    for n, stack_label in enumerate(dict.fromkeys(r.stack_label for r in rows)):
        body = []
        for r in (r for r in rows if r.stack_label == stack_label):
            line: list[Any] = [r.label, r.header_profile, r.cell_ids, r.overhead_bytes_per_client_per_s]
            for i in range(len(CLIENT_COUNTS)):
                line.append(r.overhead_mbps[i])
                if i in measured_at:
                    line.append(r.measured_overhead_mbps[i])
                line.append(r.reference_mbps[i] if r.reference_mbps else None)
            line.append(r.wire_mbps[-1])
            body.append(line)
        said = " ".join(
            f"With the {esc(profile)} header profile, short polling cost {fmt(ratio)}× WebSocket's overhead per "
            "client per second."
            for label, profile, ratio in ratios
            if label == stack_label
        )
        blocks.append(
            f"<h3>Measured over {esc(stack_label)}</h3>"
            f"{table(headers, body, table_id='classic' if n == 0 else f'classic-{n}', text_cols=(0, 1, 2), keys=keys)}"
            + (f"<p>{said}</p>" if said else "")
        )
    explanations = "".join(
        f"<details><summary><b>{esc(r.label)}, {esc(r.header_profile)}, {esc(r.stack_label)}:</b> "
        f"{esc(first_sentence(r.explanation))}</summary><p>{esc(r.explanation)}</p></details>"
        for r in rows
    )
    if measured_at:
        counts = " and ".join(fmt(CLIENT_COUNTS[i]) for i in measured_at)
        measured_note = (
            f"This run also measured {counts} clients: the <b>measured with</b> column is that cell's own overhead "
            "(its bytes per client per second × its clients × 8 / 2<sup>20</sup>), beside the extrapolation from the "
            "baseline cell, so the two can be compared; the Scaling chart shows whether cost was linear in between."
        )
        doubtful = [
            f"{r.label} ({r.header_profile}, {r.stack_label}) at {fmt(CLIENT_COUNTS[i])} clients, "
            f"{r.measured_cell_ids[i]}: {r.measured_doubts[i]}"
            for r in rows
            for i in measured_at
            if r.measured_doubts[i]
        ]
        if doubtful:
            measured_note += " Measured in doubtful cells: " + "; ".join(esc(d) for d in doubtful) + "."
    else:
        measured_note = (
            "Nothing at those client counts was measured; the Scaling chart shows whether cost was linear over the "
            "clients that were."
        )
    intro = (
        "<p>The table that made the case for WebSocket, redone with measured numbers. Each row takes one measured cell "
        "(the baseline feed cell of that transport and header profile), its HTTP/frame overhead in bytes per client "
        "per second (request and response headers, wrappers and frame headers, both directions, no payload, no "
        "TCP/IP), and <b>derives</b> the bandwidth of 1,000, 10,000 and 100,000 such clients by linear extrapolation "
        f"(bytes/s × clients × 8 / 2<sup>20</sup>, the reference's Mbps). {measured_note} The reference column is "
        f"cited from {esc(REFERENCE_CITATION)}: {REFERENCE_POLL_HEADER_BYTES} bytes of headers per poll at one poll "
        f"per second (polling) and a {REFERENCE_WS_FRAME_BYTES}-byte frame header per message at one message per "
        "second (WebSocket); it has no figures for long polling and SSE (–). The last column adds the payload and "
        "TCP/IP headers: everything the network carried.</p>"
    )
    if not rows:
        return "<h2 id='classic'>The classic table</h2><p>No feed cells at the baseline settings.</p>"
    return (
        f"<h2 id='classic-table'>The classic table</h2>{intro}"
        + "".join(blocks)
        + f"<h3>How the measured figures differ from the reference, and why</h3>{explanations}"
    )


def capacity_summary_html(a: Analysis) -> str:
    """One line for the first screen when the run swept the number of clients: each transport's capacity."""
    caps = capacities(a)
    if not has_sweep(caps):
        return ""
    several = len({c.stack for c in caps}) > 1
    parts = [
        f"{esc(c.label)}{f' over {esc(c.stack_label)}' if several else ''} {esc(c.capacity_text())} clients "
        f"({esc(c.stopped_text())})"
        for c in caps
    ]
    return (
        f"<p id='capacity-summary'><b>Capacity</b> (p99 at or under {fmt(a.capacity_p99_s)} s, plus the poll "
        "interval for polling, nothing lost, load "
        f"generator unsaturated): {'; '.join(parts)}. <a href='#capacity'>Details</a>.</p>"
    )


def capacity_html(a: Analysis, charts: Mapping[str, tuple[bytes, bytes]]) -> str:
    """Where each transport stops: the capacity table, the chart, and every size with the server's fan-out."""
    caps = capacities(a)
    head = "<h2 id='capacity'>Capacity: where each transport stops</h2>"
    if not caps:
        return head + "<p>No feed cells at the baseline settings.</p>"
    threshold = fmt(a.capacity_p99_s)
    source = "--capacity-p99" if a.capacity_p99_s != configured_capacity_p99_s(a.run) else "report.capacity_p99_s"
    intro = (
        f"<p>Per transport, the largest number of clients at which the worst repeat's p99 latency stayed at or under "
        f"<b>{threshold} s</b> ({esc(source)}; for a transport that polls, {threshold} s plus its poll interval, "
        "since a polled event waits up to one interval by design), no message was lost and the load generator was "
        "not saturated, walking "
        "up the client counts this run measured (the baseline's other settings held fixed) until the first that "
        "failed; the last column says what failed there. At the capacity: server CPU per delivery (server_cpu_s ÷ "
        "server_deliveries, the app server's process; a TLS stack's HAProxy is in proxy_cpu_s and proxy_rss_bytes, "
        "not here), server memory per connection (derived: (RSS − RSS at the "
        "smallest size) ÷ (clients − its clients), what each connection added; at the smallest size RSS ÷ clients, "
        "which includes the process's baseline, marked *), and bytes per second on the wire (TCP payload both "
        "directions plus TCP/IP headers, which are derived from segment counts; all clients). Means over the "
        "repeats. A figure after &lt; or &gt; is a bound: the server's CPU read 0 "
        f"(under {fmt_duration(cpu_resolution_s(a.cpu_unit_s))}) in that window.</p>"
    )
    headers = [
        "transport", "stack", "client counts measured", "capacity (clients)", "p99 there (ms)",
        "server CPU per delivery (µs)", "deliveries per server CPU-second", "memory per connection (KiB)",
        "bytes/s on the wire", "stopped",
    ]  # fmt: skip
    keys = [
        "transport", "stack", "sizes", "capacity", "p99_ms", "cpu_us_per_delivery", "deliveries_per_cpu_s",
        "memory_per_connection_kib", "wire_bytes_per_s", "stopped",
    ]  # fmt: skip
    body = []
    for c in caps:
        at = c.capacity
        memory = fmt(c.memory_per_connection_bytes / 1024) + ("" if c.memory_marginal or at is None else " *")
        body.append(
            [
                c.label, c.stack_label, ", ".join(fmt(s.clients) for s in c.sizes), c.capacity_text(),
                at.p99_ms if at else None, at.cpu_us_per_delivery.text() if at else None,
                at.deliveries_per_cpu_s.text() if at else None, memory if at else None,
                at.wire_bytes_per_s if at else None, c.stopped_text(),
            ]
        )  # fmt: skip
    chart = ""
    if "capacity" in charts:
        svg, png = charts["capacity"]
        chart = chart_html("capacity", svg, png)
    return (
        head
        + intro
        + table(headers, body, table_id="capacity", text_cols=(0, 1, 2, 9), keys=keys, wrap_cols=(9,))
        + chart
        + sizes_html(a, caps)
    )


def sizes_html(a: Analysis, caps: list[Capacity]) -> str:
    """Every client count of every transport: the capacity test's figures and the server's fan-out."""
    streaming = a.transports.streaming()
    headers = [
        "transport", "stack", "clients", "cells", "p99, worst repeat (ms)", "passed", "what failed",
        "server CPU per delivery (µs)", "deliveries per server CPU-second", "its range (CPU resolution)",
        f"fan-out target ≥ {fmt(FANOUT_TARGET_PER_CPU_S)}", "bytes/s on the wire",
    ]  # fmt: skip
    keys = [
        "transport", "stack", "clients", "cell_ids", "p99_ms", "passed", "failure", "cpu_us_per_delivery",
        "deliveries_per_cpu_s", "deliveries_per_cpu_s_range", "fanout_target", "wire_bytes_per_s",
    ]  # fmt: skip
    body = []
    for c in caps:
        for s in c.sizes:
            met = fanout_met(s.deliveries_per_cpu_s)
            target = (
                ("met" if met else "not met" if met is False else "unknown")
                if fanout_target_applies(c.transport, s.clients, streaming)
                else ""
            )
            body.append(
                [
                    c.label, c.stack_label, s.clients, s.cell_ids, s.p99_ms, s.passed, s.failure,
                    s.cpu_us_per_delivery.text(), s.deliveries_per_cpu_s.text(), s.deliveries_per_cpu_s.range_text(),
                    target, s.wire_bytes_per_s,
                ]
            )  # fmt: skip
    names = " and ".join(a.transports.label(t) for t in streaming) or "the streaming transports"
    return (
        "<h3 id='fanout'>Every client count, and the server's fan-out</h3><p>The server's fan-out is the events it "
        "handed to client sockets per second of its CPU (server_deliveries ÷ server_cpu_s, both from its /stats "
        "inside the window), pooled over the size's repeats: their total deliveries ÷ their total CPU. Each window's "
        "CPU is the difference of two readings of user and system time, each counted in whole steps of the server's "
        "CPU unit (server_cpu_unit_s: 1 µs for pushbench's server, which reads getrusage; a 10-ms clock tick for a "
        f"server whose /stats does not say; {fmt_duration(a.cpu_unit_s)} in this run at the coarsest), so it is known "
        "to 2 steps either way; the range column is where that leaves the figure. "
        f"The fan-out target: at least {fmt(FANOUT_TARGET_PER_CPU_S)} for {esc(names)} at "
        f"{fmt(FANOUT_TARGET_CLIENTS)} clients; the target column says met when all of the range is at or above it, "
        "not met when all of it is below, unknown in between.</p>"
        + table(headers, body, table_id="capacity-sizes", text_cols=(0, 1, 3, 6, 9, 10), keys=keys, wrap_cols=(6,))
    )


def first_sentence(text: str) -> str:
    """The first sentence of an explanation, as the one-line summary it is folded under."""
    head, dot, rest = text.partition(". ")
    return head + "." if dot and rest else text


def reference_case_html(a: Analysis) -> str:
    """The article's own case (a run with the classic2010 header profile, e.g. configs/classic.toml)."""
    profile = (a.run.meta.get("header_profiles") or {}).get("classic2010") or {}
    article = profile.get("article")
    if not isinstance(article, dict):
        return ""
    return f"<h3 id='reference-case'>The reference's own case</h3><p>{esc(reference_case(article, a.cells, a.run.stacks))}</p>"


def cells_html(a: Analysis) -> str:
    rows = records(a.run.summary[SUMMARY_COLUMNS])
    body = [[r[c] for c in SUMMARY_COLUMNS] for r in rows]
    text = tuple(
        i
        for i, c in enumerate(SUMMARY_COLUMNS)
        if c in ("cell_id", "status", "transport", "scenario", "header_profile")
    )
    return (
        "<h2 id='cells'>Every cell</h2><p>Every row of summary.csv (one per cell and repeat), figures as recorded "
        "(bytes over the whole window and all clients, latencies in ms, CPU in seconds).</p>"
        f"<p class='print-only'>Not printed: {len(SUMMARY_COLUMNS)} columns do not fit a page; they are in "
        "summary.csv and on screen.</p><div class='screen-only'>"
        + table(SUMMARY_COLUMNS, body, table_id="cells", text_cols=text, keys=SUMMARY_COLUMNS)
        + "</div>"
    )


def headlines_html(a: Analysis) -> str:
    """Per cell, the headline figures the charts draw: the mean of its measured repeats and their spread."""
    keys = ["cell_ids", "cell", "repeats"]
    headers = ["cells", "cell", "repeats"]
    for col, (name, unit) in HEADLINES.items():
        keys += [col, f"{col}__spread"]
        headers += [f"{name} ({unit})", "spread (%)"]
    body = []
    for cell in records(a.cells):
        line: list[Any] = [cell["cell_ids"], describe_cell(cell, a.transports), cell["repeats"]]
        for col in HEADLINES:
            spread = cell[f"{col}__spread"]
            value = cell[col]
            if col == "server_cpu_ms_per_1k_events":
                value = fmt_bound(value, cpu_ms_per_thousand_events_bound(cell))
            line += [value, 100 * spread if cell["repeats"] > 1 else None]
        body.append(line)
    return (
        "<h2 id='headline-figures'>Headline figures per cell</h2><p>What the charts draw, per cell: the mean of its "
        "measured repeats, derived from summary.csv (bytes on the wire include TCP/IP headers; per event means per "
        "delivered event), and the spread of the repeats, (max − min) / mean.</p>"
        + table(headers, body, table_id="headlines", text_cols=(0, 1), keys=keys)
    )


def warnings_html(items: list[str]) -> str:
    if not items:
        return "<h2 id='warnings'>Warnings</h2><p>None: no saturated generator, lost messages, errors or noisy repeats.</p>"
    lis = "".join(f'<li class="warn">{esc(w)}</li>' for w in items)
    first = items[0] if len(items[0]) <= 140 else items[0][:139] + "…"
    return (
        f"<h2 id='warnings'>Warnings ({len(items)})</h2><details><summary>{esc(first)}"
        f"{f' … and {len(items) - 1} more' if len(items) > 1 else ''}</summary><ul>{lis}</ul></details>"
    )


def render(a: Analysis, charts: Mapping[str, tuple[bytes, bytes]]) -> str:
    """The whole report as one HTML string; ``charts``: name -> (SVG, PNG) bytes, ``headline`` first."""
    found = warnings(a)
    found_verdicts = verdicts(a)
    banner = (
        f'<p class="banner">{len(found)} warning{"s" if len(found) != 1 else ""} about these results: '
        f'<a href="#warnings">read them</a> before quoting a figure.</p>'
        if found
        else ""
    )
    meta = a.run.meta
    lead = (
        f"Run <b>{esc(a.run.name)}</b> ({esc(meta.get('config_source', 'unknown config'))}, {len(a.cells)} cells, "
        f"started {esc(meta.get('started_at', '?'))}): how many bytes one event costs on the wire and how late it "
        "arrives, per transport. <a href='#run'>What was run</a> · <a href='#verdicts'>why each verdict</a> · "
        "<a href='#charts'>every chart</a> · <a href='#capacity'>capacity</a> · <a href='#cells'>every number</a>"
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>pushbench report: {esc(a.run.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>pushbench: what polling costs compared with server push</h1><p class='lead'>{lead}</p>",
        banner,
        glance_html(a, charts, found_verdicts),
        "<h2 id='verdicts'>Verdicts</h2><p>Each claim checked against the baseline cells of this run (see What was "
        "run). Figures are means over each cell's repeats; the table of every cell below has each repeat as "
        "recorded in summary.csv.</p>",
        *(verdict_html(v) for v in found_verdicts),
        what_was_run(a),
        "<h2 id='charts'>Charts</h2>",
        *(chart_html(name, svg, png) for name, (svg, png) in charts.items() if name not in ("headline", "capacity")),
        capacity_html(a, charts),
        classic_html(classic_rows(a.cells, a.base, a.transports, a.run.stacks)),
        reference_case_html(a),
        headlines_html(a),
        cells_html(a),
        warnings_html(found),
        "<footer><p>Generated by <code>python -m analysis</code> from run.json, summary.csv and histograms.parquet of "
        f"this folder only.</p></footer>{PRINT_SCRIPT}</body></html>",
    ]
    return "\n".join(parts)
