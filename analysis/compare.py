"""``--compare RUN_A RUN_B``: the headline figures of every cell both runs measured, as ratios B / A.

A difference is "within noise" when it is no larger than the spread (max − min) the repeats showed in
either run: the runs cannot tell the two apart. Without repeats there is no spread to judge by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.fmt import fmt, fmt_bound
from analysis.glance import cpu_ms_per_thousand_events_bound
from analysis.metrics import HEADLINES, PARAMETERS, records, safe_div
from analysis.model import Analysis
from analysis.verdicts import describe_cell


@dataclass(frozen=True)
class Difference:
    cell: str
    figure: str
    unit: str
    a: float
    b: float
    ratio: float  # b / a
    judgement: str  # "within noise", "differs", "no repeats to judge noise", "known only as a bound"
    a_below: float = math.nan  # a (and b) known only to be under this: server CPU that read 0 clock ticks
    b_below: float = math.nan


def cell_key(cell: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies a cell across runs: its parameters (numbers compared as floats)."""
    out = []
    for p in PARAMETERS:
        v = cell[p]
        out.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
    return tuple(out)


def judge(a: float, a_min: float, a_max: float, a_n: int, b: float, b_min: float, b_max: float, b_n: int) -> str:
    """Is |b − a| within the spread the repeats showed? (the larger of the two runs' max − min)."""
    if a_n < 2 and b_n < 2:
        return "no repeats to judge noise"
    spreads = [hi - lo for hi, lo, n in ((a_max, a_min, a_n), (b_max, b_min, b_n)) if n >= 2]
    return "within noise" if abs(b - a) <= max(spreads) else "differs"


def compare(run_a: Analysis, run_b: Analysis) -> tuple[list[Difference], int, int]:
    """Differences per matching cell and headline figure; also how many cells only A or only B has."""
    a_cells = {cell_key(c): c for c in records(run_a.cells)}
    b_cells = {cell_key(c): c for c in records(run_b.cells)}
    order = {t: i for i, t in enumerate([*run_a.transports.by_name, *run_b.transports.by_name])}
    common = sorted(set(a_cells) & set(b_cells), key=lambda k: (order.get(str(k[0]), 99), tuple(map(str, k[1:]))))
    out = []
    for key in common:
        a, b = a_cells[key], b_cells[key]
        for col, (label, unit) in HEADLINES.items():
            va, vb = float(a[col]), float(b[col])
            if math.isnan(va) and math.isnan(vb):
                continue
            below_a, below_b = (
                (cpu_ms_per_thousand_events_bound(a), cpu_ms_per_thousand_events_bound(b))
                if col == "server_cpu_ms_per_1k_events"
                else (math.nan, math.nan)
            )
            if not (math.isnan(below_a) and math.isnan(below_b)):
                cell = describe_cell(a, run_a.transports)
                out.append(Difference(cell, label, unit, va, vb, math.nan, "known only as a bound", below_a, below_b))
                continue
            out.append(
                Difference(
                    cell=describe_cell(a, run_a.transports),
                    figure=label,
                    unit=unit,
                    a=va,
                    b=vb,
                    ratio=safe_div(vb, va),
                    judgement=judge(
                        va,
                        a[f"{col}__min"],
                        a[f"{col}__max"],
                        a["repeats"],
                        vb,
                        b[f"{col}__min"],
                        b[f"{col}__max"],
                        b["repeats"],
                    ),
                )
            )
    return out, len(set(a_cells) - set(b_cells)), len(set(b_cells) - set(a_cells))


def format_comparison(run_a: Analysis, run_b: Analysis) -> str:
    diffs, only_a, only_b = compare(run_a, run_b)
    lines = [f"A = {run_a.run.path}", f"B = {run_b.run.path}", "ratio = B / A"]
    lines += [f"note: {d}" for d in metadata_differences(run_a.run.meta, run_b.run.meta)]
    lines.append("")
    if not diffs:
        lines.append("no cell was measured by both runs")
    current = None
    for d in diffs:
        if d.cell != current:
            lines.append(d.cell)
            current = d.cell
        a, b = fmt_bound(d.a, d.a_below), fmt_bound(d.b, d.b_below)
        lines.append(f"  {d.figure} [{d.unit}]: A {a}  B {b}  ratio {fmt(d.ratio)}  {d.judgement}")
    differs = sum(d.judgement == "differs" for d in diffs)
    noise = sum(d.judgement == "within noise" for d in diffs)
    bounds = sum(d.judgement == "known only as a bound" for d in diffs)
    lines.append("")
    lines.append(
        f"{len({d.cell for d in diffs})} matching cells; figures: {differs} differ, {noise} within noise, "
        f"{len(diffs) - differs - noise - bounds} without repeats to judge"
        + (f", {bounds} known only as bounds (server CPU that read 0 clock ticks)" if bounds else "")
        + f"; cells only in A: {only_a}, only in B: {only_b}."
    )
    return "\n".join(lines)


def metadata_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two runs besides the code under test: machine, Python, packages, config."""
    out = []
    for key in ("cpu_model", "cpu_count", "memory_bytes", "kernel", "hostname"):
        va, vb = (a.get("machine") or {}).get(key), (b.get("machine") or {}).get(key)
        if va != vb:
            out.append(f"machine {key} differs (A: {va}, B: {vb}): differences may come from the machine")
    if a.get("python") != b.get("python"):
        out.append(f"Python differs (A: {a.get('python')}, B: {b.get('python')})")
    pa, pb = a.get("packages") or {}, b.get("packages") or {}
    for name in sorted(set(pa) | set(pb)):
        if pa.get(name) != pb.get(name):
            out.append(f"package {name} differs (A: {pa.get(name)}, B: {pb.get(name)})")
    if a.get("git_commit") != b.get("git_commit"):
        out.append(f"git commit differs (A: {a.get('git_commit')}, B: {b.get('git_commit')})")
    for section in ("feed", "server", "load"):
        sa, sb = (a.get("config") or {}).get(section) or {}, (b.get("config") or {}).get(section) or {}
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key) != sb.get(key) and key not in ("seed",):
                out.append(f"config {section}.{key} differs (A: {sa.get(key)!r}, B: {sb.get(key)!r})")
    return out
