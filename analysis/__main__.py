"""``python -m analysis RESULTS_DIR`` writes charts and report.html; ``--compare RUN_A RUN_B`` prints ratios.

Reads only the files of the run folder(s) (docs/results-format.md). Exit status 2, with one line naming the
file and column at fault, when results are missing or malformed; nothing is written then.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from analysis.results import ResultsError, load_run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results_dir", nargs="?", help="a run folder, e.g. results/latest")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="print, per cell both runs measured, the ratio B/A of the headline figures",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pick the cell the charts hold fixed, e.g. --baseline clients=1000 (repeatable)",
    )
    parser.add_argument(
        "--capacity-p99",
        metavar="SECONDS",
        help="the capacity table's p99 threshold, instead of run.json's report.capacity_p99_s (default 1 s)",
    )
    args = parser.parse_args(argv)
    if bool(args.results_dir) == bool(args.compare):
        parser.error("give either RESULTS_DIR or --compare RUN_A RUN_B")
    return args


def parse_baseline(items: list[str]) -> dict[str, Any]:
    from analysis.metrics import PARAMETERS

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in PARAMETERS or key in ("transport", "varied_extra"):
            raise ValueError(
                f"--baseline {item!r}: expected KEY=VALUE with KEY one of "
                f"{', '.join(p for p in PARAMETERS if p not in ('transport', 'varied_extra'))}"
            )
        if raw.lower() in ("true", "false"):
            out[key] = raw.lower() == "true"
        else:
            try:
                out[key] = float(raw)
            except ValueError:
                out[key] = raw
    return out


def parse_capacity_p99(raw: str | None) -> float | None:
    """``--capacity-p99 SECONDS`` as a number > 0 (None when not given); ValueError naming the option and key."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"--capacity-p99 {raw!r}: report.capacity_p99_s must be a number of seconds > 0, e.g. --capacity-p99 0.5"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = parse_baseline(args.baseline)
        capacity_p99_s = parse_capacity_p99(args.capacity_p99)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from analysis.model import analyse

    try:
        if args.compare:
            from analysis.compare import format_comparison

            a, b = (analyse(load_run(p), overrides, capacity_p99_s) for p in args.compare)
            print(format_comparison(a, b))
            return 0
        analysis = analyse(load_run(args.results_dir), overrides, capacity_p99_s)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from analysis.charts import CHARTS
    from analysis.network import has_network, network_chart
    from analysis.output import publish, render_figure
    from analysis.report import render

    rendered = {name: render_figure(make(analysis)) for name, make in CHARTS.items()}
    if has_network(analysis):
        rendered["network"] = render_figure(network_chart(analysis))
    html = render(analysis, rendered)
    path = publish(analysis.run.path, rendered, html)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
