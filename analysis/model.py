"""A run, analysed: per-repeat rows with derived figures, per-cell means, and the baseline cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from hdrh.histogram import HdrHistogram

from analysis.metrics import aggregate, baseline, derive
from analysis.results import Run, records
from analysis.transports import Transports


@dataclass
class Analysis:
    run: Run
    rows: pd.DataFrame  # summary.csv + derived figures, one row per cell and repeat
    cells: pd.DataFrame  # one row per cell: means over measured repeats, with __min/__max/__spread
    base: dict[str, Any]  # the baseline parameters charts hold fixed while one factor varies

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


def analyse(run: Run, baseline_overrides: dict[str, Any] | None = None) -> Analysis:
    rows = derive(run.summary, run.transports.polling())
    cells = aggregate(rows)
    if cells.empty:
        from analysis.results import ResultsError

        raise ResultsError(f"{run.path / 'summary.csv'}: every cell failed; there is nothing to analyse")
    base = baseline(cells, run.meta.get("config"), baseline_overrides)
    return Analysis(run, rows, cells, base)
