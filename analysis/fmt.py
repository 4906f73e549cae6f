"""One number format for the whole report, so a figure reads the same wherever it appears."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = "–"


def fmt(value: Any) -> str:
    """A number as the report prints it: thousands separated, 4 significant digits below 1,000.

    ``12345.6`` → ``12,346``; ``871`` → ``871``; ``0.01526`` → ``0.01526``; ``True`` → ``yes``;
    NaN or None → ``–``. Strings pass through. The rounding error is below 0.05 %.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    x = float(value)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    text = f"{x:.4g}"
    if "e" in text:  # tiny numbers: plain decimals read better than 1.2e-05 in a table
        text = f"{x:.{4 - 1 - math.floor(math.log10(abs(x)))}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0") else text


def fmt_bound(value: Any, bound: Any, relation: str = "<") -> str:
    """``fmt(value)``, or ``"< 0.05"`` (``relation`` and the bound) when the figure is known only as a bound:
    ``bound`` not NaN, e.g. a server CPU delta under the clock tick, which reads 0."""
    if bound is None or (isinstance(bound, float | int | np.floating) and math.isnan(float(bound))):
        return fmt(value)
    return f"{relation} {fmt(bound)}"


def fmt_duration(seconds: float) -> str:
    """A short duration with its unit: ``0.02`` → ``20 ms``, ``2e-06`` → ``2 µs`` (µs under a millisecond)."""
    return f"{fmt(seconds * 1000)} ms" if seconds >= 1e-3 else f"{fmt(seconds * 1e6)} µs"


def parse(text: str) -> float:
    """Inverse of ``fmt`` for numbers (what the tests use to read figures back out of the report)."""
    text = text.strip().replace(",", "")
    if text == MISSING:
        return math.nan
    return float(text)
