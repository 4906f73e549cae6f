"""Read one run folder (docs/results-format.md, version 1) and refuse anything that does not follow it.

Every problem is a ``ResultsError`` whose message names the file, and the column or key, at fault, so
``python -m analysis`` can print it on one line and exit 2 before writing anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.stacks import Stacks, with_stack_columns
from analysis.stacks import from_run_json as stacks_from_run_json
from analysis.transports import Transports, from_run_json

FORMAT_VERSION = 1

# summary.csv: the required columns, in the contract's order, with how each is parsed.
STR_COLUMNS = ("cell_id", "status", "transport", "scenario", "header_profile")
BOOL_COLUMNS = ("keepalive", "ws_compress", "saturated")
# Numbers that may be empty, e.g. latency when a cell delivered nothing.
OPTIONAL_NUMBER_COLUMNS = (
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "server_cpu_s",
    "server_rss_bytes",
    "loadgen_cpu_pct",
    "loop_lag_p99_ms",
    "time_wait_end",
    "late_ticks",
    "connections_peak",
)
SUMMARY_COLUMNS = [
    "cell_id",
    "repeat",
    "status",
    "transport",
    "scenario",
    "clients",
    "rate_hz",
    "payload_bytes",
    "burst",
    "header_profile",
    "request_header_bytes",
    "poll_interval_s",
    "keepalive",
    "ws_compress",
    "duration_s",
    "events_published",
    "messages_expected",
    "messages_received",
    "messages_lost",
    "messages_duplicated",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "bytes_down_tcp",
    "bytes_up_tcp",
    "bytes_down_payload",
    "bytes_up_payload",
    "bytes_down_overhead",
    "bytes_up_overhead",
    "tcp_segments",
    "tcp_segments_down",
    "tcp_segments_up",
    "bytes_tcpip_headers",
    "connections_opened",
    "connections_peak",
    "time_wait_end",
    "server_cpu_s",
    "server_rss_bytes",
    "loadgen_cpu_pct",
    "loop_lag_p99_ms",
    "saturated",
    "errors",
    "errors_connect",
    "errors_timeout",
    "errors_http_status",
    "errors_protocol",
    "errors_disconnect",
    "late_ticks",
    "window_start_ns",
    "window_end_ns",
]
ERROR_KINDS = ("connect", "timeout", "http_status", "protocol", "disconnect")
STATUSES = ("ok", "incomplete", "failed")

# The summary.csv columns that say which cell a row is; any other key a sweep varies (cookie_bytes,
# send_interval_s, ...) is kept, from run.json, in ``varied_extra``.
CELL_PARAMETERS = (
    "transport",
    "scenario",
    "clients",
    "rate_hz",
    "payload_bytes",
    "burst",
    "header_profile",
    "poll_interval_s",
    "keepalive",
    "ws_compress",
    "stack",
)
# Keys a sweep may set that say how a cell is run, not what it measures: they do not make a cell different.
NOT_CELL_KEYS = ("repeat", "load.repeat")
HISTOGRAM_COLUMNS = ("cell_id", "repeat", "kind", "unit", "lowest", "highest", "significant_digits", "encoded")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a table as plain dicts keyed by column name."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


class ResultsError(Exception):
    """A results folder that does not follow docs/results-format.md; the message names the culprit."""


@dataclass
class Run:
    """One complete run: run.json, summary.csv (typed, one row per cell and repeat) and the latency histograms."""

    path: Path
    meta: dict[str, Any]
    summary: pd.DataFrame
    histograms: dict[tuple[str, int], str]  # (cell_id, repeat) -> HdrHistogram.encode() text, microseconds
    transports: Transports  # run.json ``transports`` (the four built-ins for older runs)
    stacks: Stacks = field(default_factory=Stacks)  # run.json ``stacks`` (the three built-ins for older runs)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def load_run(path: str | Path) -> Run:
    """Read and validate a run folder; raise ResultsError naming the first file/column that is wrong."""
    folder = Path(path)
    if not folder.exists():
        raise ResultsError(f"{folder}: no such results folder")
    if not folder.is_dir():
        raise ResultsError(f"{folder}: is not a folder")
    if folder.resolve().name.startswith("."):
        raise ResultsError(
            f"{folder}: is an unfinished run (name starts with '.'; the load generator never renamed it)"
        )
    meta = read_run_json(folder / "run.json")
    summary = with_stack_columns(read_summary(folder / "summary.csv"))
    attach_cells(summary, meta, folder / "run.json", folder / "summary.csv")
    histograms = read_histograms(folder / "histograms.parquet", summary)
    try:
        transports = from_run_json(meta.get("transports"))
        stacks = stacks_from_run_json(meta.get("stacks"))
    except ValueError as exc:
        raise ResultsError(f"{folder / 'run.json'}: {exc}") from None
    return Run(folder, meta, summary, histograms, transports, stacks)


def read_run_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ResultsError(f"{path}: missing (a run folder is complete only when run.json exists)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ResultsError(f"{path}: key 'format_version' is {version!r}; this analysis reads version {FORMAT_VERSION}")
    for key, kind in (("config", dict), ("machine", dict), ("cells", list)):
        if not isinstance(meta.get(key), kind):
            raise ResultsError(f"{path}: key {key!r} is missing or not a JSON {'object' if kind is dict else 'array'}")
    for i, cell in enumerate(meta["cells"]):
        if not isinstance(cell, dict):
            raise ResultsError(f"{path}: cells[{i}] is not an object")
        for key, kinds in (("cell_id", (str,)), ("index", (int,)), ("repeat", (int,)), ("status", (str,))):
            if not isinstance(cell.get(key), kinds) or isinstance(cell.get(key), bool):
                raise ResultsError(f"{path}: cells[{i}] key {key!r} is missing or not a {kinds[0].__name__}")
        if cell["status"] not in STATUSES:
            raise ResultsError(f"{path}: cells[{i}] status {cell['status']!r} is not one of {', '.join(STATUSES)}")
    return meta


def _parse_number(text: str) -> float:
    if text.strip() == "":
        return math.nan
    return float(text)


def read_summary(path: Path) -> pd.DataFrame:
    """summary.csv with every required column present and typed (numbers as float, NaN where empty)."""
    if not path.is_file():
        raise ResultsError(f"{path}: missing")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in raw.columns]
    if missing:
        raise ResultsError(
            f"{path}: column {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if raw.empty:
        raise ResultsError(f"{path}: has no rows (no cell was measured)")
    out = pd.DataFrame(index=raw.index)
    measured_rows = [str(v).strip() != "failed" for v in raw["status"].tolist()]

    def where(col: str, i: int) -> str:
        return f"{path}: column {col!r}, row {i + 2} (cell {raw.at[i, 'cell_id']!r})"

    for col in SUMMARY_COLUMNS:
        values = raw[col].tolist()
        if col in STR_COLUMNS:
            for i, v in enumerate(values):
                if v.strip() == "":
                    raise ResultsError(f"{where(col, i)}: is empty")
            out[col] = [v.strip() for v in values]
        elif col in BOOL_COLUMNS:
            parsed_bools = []
            for i, v in enumerate(values):
                low = v.strip().lower()
                if low not in _TRUE and low not in _FALSE:
                    raise ResultsError(f"{where(col, i)}: {v!r} is not true or false")
                parsed_bools.append(low in _TRUE)
            out[col] = parsed_bools
        else:
            parsed = []
            for i, v in enumerate(values):
                try:
                    x = _parse_number(v)
                except ValueError:
                    raise ResultsError(f"{where(col, i)}: {v!r} is not a number") from None
                if math.isnan(x) and col not in OPTIONAL_NUMBER_COLUMNS and measured_rows[i]:
                    raise ResultsError(f"{where(col, i)}: is empty")
                parsed.append(x)
            out[col] = pd.Series(parsed, index=raw.index, dtype="float64")
    statuses: list[str] = out["status"].tolist()
    durations: list[float] = out["duration_s"].tolist()
    seen: set[tuple[str, float]] = set()
    for i, (status, duration, key) in enumerate(
        zip(statuses, durations, zip(out["cell_id"].tolist(), out["repeat"].tolist(), strict=True), strict=True)
    ):
        if status not in STATUSES:
            raise ResultsError(f"{where('status', i)}: {status!r} is not one of {', '.join(STATUSES)}")
        if status != "failed" and not duration > 0:
            raise ResultsError(f"{where('duration_s', i)}: {duration!r} must be > 0 for a measured cell")
        if key in seen:
            raise ResultsError(f"{where('cell_id', i)}: cell and repeat appear twice")
        seen.add(key)
    # Keep the extra columns the load generator may add after the required ones, as text.
    for col in raw.columns:
        if col not in out.columns:
            out[col] = raw[col]
    return out


def attach_cells(summary: pd.DataFrame, meta: dict[str, Any], run_json: Path, summary_csv: Path) -> None:
    """Add ``cell_index`` (the matrix point, shared by its repeats) and ``varied_extra`` from run.json."""
    by_id = {c["cell_id"]: c for c in meta["cells"]}
    indices, extras = [], []
    for i, cell_id in enumerate(summary["cell_id"].tolist()):
        cell = by_id.get(str(cell_id))
        if cell is None:
            raise ResultsError(f"{run_json}: cells has no entry for cell_id {cell_id!r} (row {i + 2} of {summary_csv})")
        indices.append(cell["index"])
        varied = cell.get("varied") or {}
        extra = (
            {k: v for k, v in varied.items() if k not in CELL_PARAMETERS and k not in NOT_CELL_KEYS}
            if isinstance(varied, dict)
            else {}
        )
        extras.append(json.dumps(extra, sort_keys=True) if extra else "")
    summary["cell_index"] = indices
    summary["varied_extra"] = extras


def read_histograms(path: Path, summary: pd.DataFrame) -> dict[tuple[str, int], str]:
    """The encoded latency histogram of every cell and repeat that was measured (status not failed)."""
    if not path.is_file():
        raise ResultsError(f"{path}: missing")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise ResultsError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    for col in HISTOGRAM_COLUMNS:
        if col not in table.columns:
            raise ResultsError(f"{path}: column {col!r} is missing")
    from hdrh.histogram import HdrHistogram

    out: dict[tuple[str, int], str] = {}
    for row in records(table):
        key = (str(row["cell_id"]), int(row["repeat"]))
        if row["kind"] != "latency":
            continue
        if row["unit"] != "us":
            raise ResultsError(f"{path}: column 'unit' is {row['unit']!r} for cell {key[0]!r}; expected 'us'")
        encoded = row["encoded"]
        try:
            HdrHistogram.decode(encoded)
        except Exception as exc:  # the decoder raises zlib, base64 and struct errors alike
            raise ResultsError(
                f"{path}: column 'encoded' of cell {key[0]!r} repeat {key[1]} is not an encoded HDR histogram "
                f"({type(exc).__name__})"
            ) from None
        out[key] = encoded.decode() if isinstance(encoded, bytes) else str(encoded)
    for row in records(summary):
        key = (str(row["cell_id"]), int(row["repeat"]))
        if row["status"] != "failed" and row["messages_received"] > 0 and key not in out:
            raise ResultsError(f"{path}: no latency histogram for cell {key[0]!r} repeat {key[1]}")
    return out
