"""What the data says about the article's three claims, and what the reader must be warned about.

Every sentence is built from the measured cells: change the data and the verdict changes with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.fmt import fmt, fmt_duration
from analysis.metrics import HEADLINES, NOISY_SPREAD, first, records, slice_cells, transports_in
from analysis.model import Analysis
from analysis.results import ERROR_KINDS
from analysis.transports import Transports

# A push transport "keeps one connection" when, inside the window, it opened fewer than this many new
# connections per client per minute and peaked at no more than this many per client.
REOPEN_TOLERANCE_PER_MIN = 0.1
PEAK_TOLERANCE_PER_CLIENT = 1.1
# A window's server CPU figure is coarse when one step of its CPU counters (server_cpu_unit_s: a 10-ms clock tick for
# a server that does not say otherwise, 1 µs for pushbench's) is more than this fraction of it (10 ms: under 0.2 s).
COARSE_CPU_FRACTION = 0.05


@dataclass(frozen=True)
class Verdict:
    claim: str
    outcome: str  # "holds", "partly holds", "does not hold", "not measured"
    text: str


def describe_cell(cell: Mapping[str, Any], tt: Transports) -> str:
    """'poll, feed, 100 clients, 10 events/s, 100-B payload, minimal headers' (plus anything unusual)."""
    parts = [
        str(cell["transport"]),
        str(cell["scenario"]),
        f"{fmt(cell['clients'])} clients",
        f"{fmt(float(cell['rate_hz']) * float(cell['burst']))} events/s",
        f"{fmt(cell['payload_bytes'])}-B payload",
        f"{cell['header_profile']} headers",
    ]
    if cell["transport"] in tt.polling():
        parts.append(f"poll every {fmt(cell['poll_interval_s'])} s")
    if not cell["keepalive"]:
        parts.append("no keep-alive")
    if cell["ws_compress"]:
        parts.append("permessage-deflate")
    if cell.get("varied_extra"):
        parts.extend(f"{k}={v}" for k, v in json.loads(str(cell["varied_extra"])).items())
    return ", ".join(parts)


def feed_base(a: Analysis) -> dict[str, Any]:
    """The baseline, in the feed scenario: the three claims are about pushing events, not echoing them."""
    return {**a.base, "scenario": "feed"}


def _cell(cells: pd.DataFrame, transport: str) -> Mapping[str, Any] | None:
    match = cells[cells["transport"] == transport]
    return None if match.empty else first(match)


def one_connection(a: Analysis) -> Verdict:
    claim = (
        "One connection: a push transport keeps one TCP connection per client, where polling keeps opening new ones."
    )
    tt = a.transports
    chosen = slice_cells(a.cells, feed_base(a), free=("keepalive",))
    # The transports that claim to keep one connection per client for the whole session.
    push = [
        c for t in tt.streaming() if (c := _cell(chosen[chosen["keepalive"] == a.base["keepalive"]], t)) is not None
    ]
    if not push:
        return Verdict(
            claim,
            "not measured",
            f"This run has no {' or '.join(map(tt.label, tt.streaming()))} feed cell at the baseline settings.",
        )
    sentences = []
    push_ok = True
    for c in push:
        opened, peak = float(c["connections_per_client_per_min"]), float(c["peak_connections_per_client"])
        ok = opened < REOPEN_TOLERANCE_PER_MIN and peak <= PEAK_TOLERANCE_PER_CLIENT
        push_ok &= ok
        sentences.append(
            f"{tt.label(c['transport'])} opened {fmt(opened)} new connections per client per minute during the window "
            f"and peaked at {fmt(peak)} concurrent connections per client."
        )
    polls = chosen[chosen["transport"].isin(tt.polling())]
    most_push = max(float(c["connections_per_client_per_min"]) for c in push)
    poll_worse = False
    for c in records(polls.sort_values("keepalive", ascending=False)):
        opened = float(c["connections_per_client_per_min"])
        polls_per_min = 60.0 / float(c["poll_interval_s"])
        poll_worse |= opened > most_push + 1
        sentences.append(
            f"Short polling {'with' if c['keepalive'] else 'without'} keep-alive opened {fmt(opened)} per client per "
            f"minute for {fmt(polls_per_min)} polls per client per minute."
        )
    if polls.empty:
        sentences.append("No short-polling cell at these settings to contrast with.")
        outcome = "holds" if push_ok else "does not hold"
    elif push_ok and poll_worse:
        outcome = "holds"
    elif push_ok:
        outcome = "partly holds"
        sentences.append(
            "Push kept one connection per client, but so did short polling: with HTTP keep-alive a poller reuses its "
            "connection, so the contrast appears only where keep-alive is off (or broken by proxies)."
        )
    else:
        outcome = "does not hold"
    return Verdict(claim, outcome, " ".join(sentences))


def server_push(a: Analysis) -> Verdict:
    claim = (
        "Server push: an event reaches the client as soon as it is published, where polling waits for the next poll."
    )
    tt = a.transports
    chosen = slice_cells(a.cells, feed_base(a), free=())
    poll = next((c for t in tt.polling() if (c := _cell(chosen, t)) is not None), None)
    pushes = [c for t in tt.pushing() if (c := _cell(chosen, t)) is not None]
    if not pushes:
        names = ", ".join(map(tt.label, tt.pushing()))
        return Verdict(
            claim, "not measured", f"This run has no feed cell of a push transport ({names}) at the baseline."
        )
    sentences = [
        "Median (p99) latency from each event's intended publish time: "
        + "; ".join(
            f"{tt.label(c['transport'])} {fmt(c['latency_p50_ms'])} ms ({fmt(c['latency_p99_ms'])} ms)" for c in pushes
        )
        + "."
    ]
    if poll is None:
        return Verdict(claim, "not measured", sentences[0] + " No short-polling cell to compare with.")
    interval_ms = float(poll["poll_interval_s"]) * 1000
    sentences.append(
        f"Short polling every {fmt(interval_ms)} ms: median {fmt(poll['latency_p50_ms'])} ms, p99 "
        f"{fmt(poll['latency_p99_ms'])} ms (an event waits on average half an interval, {fmt(interval_ms / 2)} ms)."
    )
    worst_push = max(float(c["latency_p50_ms"]) for c in pushes)
    p50_poll = float(poll["latency_p50_ms"])
    if math.isnan(worst_push) or math.isnan(p50_poll):
        return Verdict(claim, "not measured", " ".join([*sentences, "Some cells delivered no events."]))
    best = min(pushes, key=lambda c: float(c["latency_p50_ms"]))
    factor = p50_poll / float(best["latency_p50_ms"]) if float(best["latency_p50_ms"]) > 0 else math.inf
    by_rate = slice_cells(a.cells, feed_base(a), free=("rate_hz",))
    rates_ok = []
    for rate, group in by_rate.groupby("events_per_s"):
        p = group[group["transport"].isin(tt.polling())]["latency_p50_ms"]
        q = group[group["transport"].isin(tt.pushing())]["latency_p50_ms"]
        if not p.empty and not q.empty:
            rates_ok.append((float(str(rate)), bool(q.max() < p.min())))
    if worst_push < p50_poll:
        outcome = "holds"
        sentences.append(
            f"{tt.label(best['transport'])} delivered the median event {fmt(factor)}× sooner than short polling."
        )
    else:
        outcome = "does not hold"
        sentences.append("At least one push transport was not faster than short polling here.")
    if len(rates_ok) > 1:
        failing = [r for r, ok in rates_ok if not ok]
        sentences.append(
            f"Across the {len(rates_ok)} event rates measured, push's median was below polling's at "
            + ("every rate." if not failing else f"all but {', '.join(fmt(r) for r in failing)} events/s.")
        )
        if failing and outcome == "holds":
            outcome = "partly holds"
    return Verdict(claim, outcome, " ".join(sentences))


def lighter_headers(a: Analysis) -> Verdict:
    claim = (
        "Lighter headers: WebSocket frames cost a few bytes where every HTTP poll repeats hundreds of bytes of headers."
    )
    tt = a.transports
    chosen = slice_cells(a.cells, feed_base(a), free=("header_profile", "stack"))
    if "stack" not in chosen.columns:
        chosen = chosen.assign(stack="h1")
    sentences = []
    outcomes = []
    stacks = a.run.stacks.order(chosen["stack"].unique())
    for stack, profile in ((s, p) for s in stacks for p in ("minimal", "browser", "custom")):
        group = chosen[(chosen["header_profile"] == profile) & (chosen["stack"] == stack)]
        if group.empty:
            continue
        over = f"Over {a.run.stacks.label(stack)}, w" if len(stacks) > 1 else "W"
        parts = []
        for t in transports_in(group, tt):
            c = first(group[group["transport"] == t])
            parts.append(
                f"{tt.label(t)} {fmt(c['overhead_bytes_per_event'])} B ({fmt(c['wire_bytes_per_event'])} B on the wire "
                f"with payload and TCP/IP)"
            )
        sentences.append(
            f"{over}ith the {profile} header profile, overhead per delivered event: " + "; ".join(parts) + "."
        )
        ws, poll = _cell(group, "ws"), _cell(group, "poll")
        if ws is not None and poll is not None:
            w, p = float(ws["overhead_bytes_per_event"]), float(poll["overhead_bytes_per_event"])
            if w > 0 and not math.isnan(p):
                sentences.append(
                    f"Over {a.run.stacks.label(stack)} a {profile} poll cost {fmt(p)} bytes of overhead per event "
                    f"against {fmt(w)} for WebSocket: short polling spent {fmt(p / w)}× WebSocket's overhead per event"
                    + (
                        f" (TLS: {fmt(poll['tls_bytes_per_event'])} and {fmt(ws['tls_bytes_per_event'])} B of it)."
                        if a.run.stacks.info(stack).tls
                        else "."
                    )
                )
            outcomes.append(w < p)
            tw, tp = float(ws["wire_bytes_per_event"]), float(poll["wire_bytes_per_event"])
            if tw > 0:
                ratio = tp / tw
                sentence = (
                    f"Counting payload and TCP/IP headers too, short polling cost {fmt(ratio)}× WebSocket per event"
                )
                if ratio < 1:
                    batch = float(poll["events_per_client_per_s"]) * float(poll["poll_interval_s"])
                    sentence += (
                        f": cheaper, because each poll carried ≈{fmt(batch)} events in one response while every "
                        "WebSocket event travels in its own TCP segment, acknowledged by another"
                    )
                sentences.append(sentence + ".")
    if not outcomes:
        return Verdict(
            claim, "not measured", " ".join(sentences) or "No feed cell with both WebSocket and short polling."
        )
    outcome = "holds" if all(outcomes) else ("does not hold" if not any(outcomes) else "partly holds")
    return Verdict(claim, outcome, " ".join(sentences))


def verdicts(a: Analysis) -> list[Verdict]:
    return [one_connection(a), server_push(a), lighter_headers(a)]


# Spreads below these are below what the instruments resolve on a shared machine, not worth a warning.
NOISE_FLOOR = {
    "latency_p50_ms": 1.0,  # ms between the fastest and slowest repeat
    "latency_p99_ms": 1.0,
    "connections_per_client_per_min": 1.0,  # new connections per client per minute
}


def is_noisy(cell: Mapping[str, Any], col: str, *, coarse_cpu: bool) -> bool:
    """Did the repeats of this cell disagree on ``col`` by more than NOISY_SPREAD (and more than its floor)?"""
    spread = cell[f"{col}__spread"]
    if math.isnan(spread) or spread <= NOISY_SPREAD:
        return False
    if col == "server_cpu_ms_per_1k_events" and coarse_cpu:
        return False  # reported once, as coarse CPU figures
    return bool(cell[f"{col}__max"] - cell[f"{col}__min"] >= NOISE_FLOOR.get(col, 0.0))


def warnings(a: Analysis) -> list[str]:
    """Everything that makes a figure less trustworthy, one sentence each, worst first."""
    out: list[str] = []
    meta = a.run.meta
    if meta.get("git_dirty"):
        out.append(
            "The run was made from a working tree with uncommitted changes (git_dirty): the commit alone does not reproduce it."
        )
    by_id = {c["cell_id"]: c for c in meta["cells"]}
    for row in records(a.rows):
        where = f"{row['cell_id']} ({describe_cell(row, a.transports)})"
        if row["status"] != "ok":
            out.append(
                f"{where}: status {row['status']}" + (": left out of charts." if row["status"] == "failed" else ".")
            )
        if row["saturated"]:
            out.append(
                f"{where}: load generator saturated (busiest worker {fmt(row['loadgen_cpu_pct'])} % CPU, event-loop "
                f"lag p99 {fmt(row['loop_lag_p99_ms'])} ms): this cell measured the client, not the transport."
            )
        if row["messages_lost"] > 0 or row["messages_duplicated"] > 0:
            out.append(
                f"{where}: {fmt(row['messages_lost'])} messages lost and {fmt(row['messages_duplicated'])} duplicated "
                f"of {fmt(row['messages_expected'])} expected."
            )
        if row["errors"] > 0:
            kinds = ", ".join(
                f"{fmt(row[f'errors_{k}'])} {k.replace('_', ' ')}" for k in ERROR_KINDS if row[f"errors_{k}"] > 0
            )
            out.append(f"{where}: {fmt(row['errors'])} errors ({kinds}).")
        clamped = (by_id.get(row["cell_id"]) or {}).get("latency_out_of_range") or 0
        if isinstance(clamped, int | float) and clamped > 0:
            out.append(
                f"{where}: {fmt(clamped)} of {fmt(row['messages_received'])} latencies fell outside the histogram's "
                "1 µs – 60 s range and were clamped to its edge; below 1 µs means a message arrived before its "
                "intended time (the sender's or publisher's timer fired early), so the low percentiles are biased."
            )
        for w in (by_id.get(row["cell_id"]) or {}).get("warnings") or []:
            # The load generator words saturation and loss itself; those are reported above from summary.csv.
            if (row["saturated"] and str(w).startswith("saturated")) or "were not received" in str(w):
                continue
            out.append(f"{where}: {w}")
    coarse_rows = a.rows["server_cpu_s"] * COARSE_CPU_FRACTION < a.rows["server_cpu_unit_s"]
    coarse_cells = set(a.rows.loc[coarse_rows, "cell_index"].tolist())
    for cell in records(a.cells):
        noisy = [
            f"{HEADLINES[col][0]} {fmt(100 * cell[f'{col}__spread'])} %"
            for col in HEADLINES
            if is_noisy(cell, col, coarse_cpu=cell["cell_index"] in coarse_cells)
        ]
        if noisy:
            out.append(
                f"{cell['cell_ids']} ({describe_cell(cell, a.transports)}): repeats are noisy, (max − min) / mean = "
                + ", ".join(noisy)
                + f" (threshold {fmt(100 * NOISY_SPREAD)} %; latency spreads under 1 ms are not counted)."
            )
    coarse = int(coarse_rows.sum())
    if coarse:
        out.append(
            f"{coarse} of {len(a.rows)} windows used under {fmt(a.cpu_unit_s / COARSE_CPU_FRACTION)} s of server CPU: "
            f"its counters step by {fmt_duration(a.cpu_unit_s)}, so their CPU per 1,000 events is coarse "
            f"({fmt(100 * COARSE_CPU_FRACTION)} % or worse); lengthen duration_s for CPU figures."
        )
    single = int((a.cells["repeats"] < 2).sum())
    if single:
        out.append(f"{single} of {len(a.cells)} cells have a single measured repeat: their spread is unknown.")
    return out
