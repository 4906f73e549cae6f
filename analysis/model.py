"""A run, analysed: per-repeat rows with derived figures, per-cell means, and the baseline cell."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from hdrh.histogram import HdrHistogram

from analysis.metrics import CLOCK_TICKS_PER_S, aggregate, baseline, derive
from analysis.results import ResultsError, Run, records
from analysis.transports import Transports

# The capacity threshold when run.json's config has none (runs written before [report] existed).
DEFAULT_CAPACITY_P99_S = 1.0


@dataclass
class Analysis:
    run: Run
    rows: pd.DataFrame  # summary.csv + derived figures, one row per cell and repeat
    cells: pd.DataFrame  # one row per cell: means over measured repeats, with __min/__max/__spread
    base: dict[str, Any]  # the baseline parameters charts hold fixed while one factor varies
    capacity_p99_s: float = DEFAULT_CAPACITY_P99_S  # [report] capacity_p99_s, or --capacity-p99
    clock_ticks_per_s: float = CLOCK_TICKS_PER_S  # the unit of the server's CPU counters where summary.csv is silent

    @property
    def cpu_unit_s(self) -> float:
        """The coarsest step of the server's CPU counters over the run's rows (``server_cpu_unit_s``): what the
        report's sentences about CPU resolution speak of."""
        units = self.rows["server_cpu_unit_s"] if "server_cpu_unit_s" in self.rows.columns else None
        return float(units.max()) if units is not None and len(units) else 1.0 / self.clock_ticks_per_s

    @property
    def transports(self) -> Transports:
        return self.run.transports

    def merged_latency(self, cell_index: int) -> HdrHistogram | None:
        """The latency histogram of a cell, its measured repeats merged losslessly (microseconds)."""
        merged: HdrHistogram | None = None
        rows = self.rows[(self.rows["cell_index"] == cell_index) & (self.rows["status"] != "failed")]
        for row in records(rows):
            encoded = self.run.histograms.get((str(row["cell_id"]), int(row["repeat"])))
            if encoded is None:
                continue
            if merged is None:
                merged = HdrHistogram.decode(encoded)
            else:
                merged.decode_and_add(encoded)
        return merged


def analyse(
    run: Run, baseline_overrides: dict[str, Any] | None = None, capacity_p99_s: float | None = None
) -> Analysis:
    """``capacity_p99_s``: the threshold of the capacity table (None: run.json's ``report.capacity_p99_s``)."""
    ticks = clock_ticks_per_s(run)
    rows = derive(run.summary, run.transports.polling(), ticks)
    cells = aggregate(rows)
    if cells.empty:
        raise ResultsError(f"{run.path / 'summary.csv'}: every cell failed; there is nothing to analyse")
    base = baseline(cells, run.meta.get("config"), baseline_overrides)
    threshold = configured_capacity_p99_s(run) if capacity_p99_s is None else capacity_p99_s
    return Analysis(run, rows, cells, base, threshold, ticks)


def positive_number(value: Any) -> bool:
    """A finite number > 0 (not a bool), as a JSON value may or may not be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def configured_capacity_p99_s(run: Run) -> float:
    """run.json's ``config.report.capacity_p99_s``; the default for runs written before the key existed."""
    report = (run.meta.get("config") or {}).get("report")
    if report is None:
        return DEFAULT_CAPACITY_P99_S
    value = report.get("capacity_p99_s", DEFAULT_CAPACITY_P99_S) if isinstance(report, dict) else report
    if not positive_number(value):
        raise ResultsError(
            f"{run.path / 'run.json'}: key config.report.capacity_p99_s is {value!r}; it must be a number of seconds > 0"
        )
    return float(value)


def clock_ticks_per_s(run: Run) -> float:
    """run.json's ``machine.clock_ticks_per_s`` (the unit of a server's CPU counters when summary.csv's
    ``server_cpu_unit_s`` does not say); Linux's 100 when absent."""
    value = (run.meta.get("machine") or {}).get("clock_ticks_per_s", CLOCK_TICKS_PER_S)
    if not positive_number(value):
        raise ResultsError(f"{run.path / 'run.json'}: key machine.clock_ticks_per_s is {value!r}; it must be > 0")
    return float(value)
