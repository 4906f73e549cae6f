"""What the analysis knows of each protocol stack, read from run.json ``stacks`` (docs/results-format.md).

Runs written before stacks existed ran everything over cleartext HTTP/1.1: their cells read as ``h1``.
The layer columns of summary.csv (HTTP, TLS, handshake, proxy) get their cleartext values for those runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class StackInfo:
    name: str
    label: str  # "HTTP/2 + TLS 1.3"
    tls: bool
    http2: bool
    hatch: str


BUILTIN: dict[str, StackInfo] = {
    s.name: s
    for s in (
        StackInfo("h1", "HTTP/1.1", False, False, ""),
        StackInfo("h1-tls", "HTTP/1.1 + TLS 1.3", True, False, "//"),
        StackInfo("h2-tls", "HTTP/2 + TLS 1.3", True, True, "xx"),
    )
}
DEFAULT = "h1"

# summary.csv stack columns (numbers) and their value for a run written before stacks: no TLS, no proxy.
LAYER_COLUMNS = (
    "bytes_down_http",
    "bytes_up_http",
    "bytes_down_tls",
    "bytes_up_tls",
    "bytes_tls_handshake",
    "bytes_down_tls_handshake",
    "bytes_up_tls_handshake",
    "proxy_cpu_s",
    "proxy_rss_bytes",
    "server_total_cpu_s",
    "server_total_rss_bytes",
    "h2_request_block_first_bytes",
    "h2_request_block_median_bytes",
)


@dataclass(frozen=True)
class Stacks:
    by_name: Mapping[str, StackInfo] = field(default_factory=lambda: dict(BUILTIN))

    def info(self, name: str) -> StackInfo:
        return self.by_name.get(name) or StackInfo(name, name, False, False, "")

    def label(self, name: str) -> str:
        return self.info(name).label

    def order(self, present: Iterable[Any]) -> list[str]:
        """The stacks present, in registry order (unknown ones last, sorted)."""
        names = {str(s) for s in present}
        return [s for s in self.by_name if s in names] + sorted(names - set(self.by_name))


def from_run_json(described: Any) -> Stacks:
    """The table of a run.json ``stacks`` value (None: a run written before it). ValueError names the culprit."""
    if described is None:
        return Stacks()
    if not isinstance(described, dict):
        raise ValueError("key 'stacks' must be an object")
    table = {}
    for name, record in described.items():
        if not isinstance(record, dict):
            raise ValueError(f"stacks.{name} must be an object")
        try:
            table[str(name)] = StackInfo(
                str(name), str(record["label"]), bool(record["tls"]), bool(record["http2"]), str(record["hatch"])
            )
        except KeyError as exc:
            raise ValueError(f"stacks.{name}.{exc.args[0]} is missing") from None
    return Stacks(table)


def with_stack_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``stack`` and the layer columns as numbers; a run without them reads as cleartext h1."""
    out = summary.copy()
    if "stack" not in out.columns:
        out["stack"] = DEFAULT
    out["stack"] = [str(s).strip() or DEFAULT for s in out["stack"]]
    for col in LAYER_COLUMNS:
        values = out[col] if col in out.columns else pd.Series([""] * len(out), index=out.index)
        out[col] = pd.to_numeric(values, errors="coerce").astype("float64")  # "" → NaN
    for d in ("down", "up"):
        missing = out[f"bytes_{d}_http"].isna()
        out.loc[missing, f"bytes_{d}_http"] = out.loc[missing, f"bytes_{d}_overhead"]
        for col in (f"bytes_{d}_tls", f"bytes_{d}_tls_handshake"):
            out[col] = out[col].fillna(0.0)
    out["bytes_tls_handshake"] = out["bytes_tls_handshake"].fillna(0.0)
    return out
