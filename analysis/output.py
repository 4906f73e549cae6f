"""Write the charts and the report so that a reader never finds them half-written.

Everything is rendered in memory first, written into a hidden temporary folder inside the run folder,
then swapped in with renames: an error at any point leaves the previous charts and report untouched.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

PNG_DPI = 120


def render_figure(fig: Figure) -> tuple[bytes, bytes]:
    """(SVG, PNG) bytes of a figure; SVG without a timestamp so the same run gives the same file."""
    svg, png = io.BytesIO(), io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})
    fig.savefig(png, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return svg.getvalue(), png.getvalue()


def publish(run_dir: Path, charts: Mapping[str, tuple[bytes, bytes]], report_html: str) -> Path:
    """Write charts/<name>.svg|png and report.html into ``run_dir`` atomically; return the report's path."""
    run_dir = run_dir.resolve()
    staging = run_dir / f".analysis-tmp-{os.getpid()}"
    old = run_dir / f".charts-old-{os.getpid()}"
    try:
        (staging / "charts").mkdir(parents=True)
        for name, (svg, png) in charts.items():
            (staging / "charts" / f"{name}.svg").write_bytes(svg)
            (staging / "charts" / f"{name}.png").write_bytes(png)
        (staging / "report.html").write_text(report_html, encoding="utf-8")
        final_charts = run_dir / "charts"
        if final_charts.exists():
            final_charts.rename(old)
        try:
            (staging / "charts").rename(final_charts)
        except OSError:
            if old.exists():
                old.rename(final_charts)  # put the previous charts back
            raise
        os.replace(staging / "report.html", run_dir / "report.html")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return run_dir / "report.html"
