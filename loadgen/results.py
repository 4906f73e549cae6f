"""The results folder of a run (docs/results-format.md): written under a temporary name, renamed when complete.

A folder is complete if and only if ``run.json`` exists in it and its name does not start with ``.``;
``run.json`` is written last, then the folder is renamed, then ``results/latest`` is repointed.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from loadgen.conn import Limit
from loadgen.headers import HeaderProfile, header_block_bytes
from loadgen.layers import block_distribution, h2_columns, layer_columns
from loadgen.metrics import (
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_DIGITS,
    cpu_percent,
    encode_histogram,
    merge_histograms,
    summarize_latency,
)
from loadgen.netpath import MECHANISM_LOOPBACK, delay_line_saturation
from loadgen.runner import CellRun
from loadgen.summary import (
    LimitEvidence,
    byte_totals,
    cell_status,
    cell_warnings,
    clock_summary,
    error_counts,
    host_label,
    message_counts,
    saturation,
    server_deltas,
    stopped_by,
    worker_health,
)
from pushbench import stacks, transports
from pushbench.config import NetworkConfig
from pushbench.stacks import STACKS
from pushbench.transports import TRANSPORTS

FORMAT_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent

NETWORK_COLUMNS = [
    "rtt_ms", "bandwidth_mbit", "loss_pct", "path_mechanism", "path_rtt_ms_p50", "path_rtt_ms_p99",
    "path_connect_ms_p50", "delayline_packets", "delayline_dropped", "delayline_cpu_pct", "delayline_us_per_packet",
    "delayline_late_p99_ms", "tcp_retrans_segs_down", "tcp_retrans_segs_up",
]  # fmt: skip

SUMMARY_COLUMNS = [
    "cell_id", "repeat", "status", "transport", "scenario", "clients", "rate_hz", "payload_bytes", "burst",
    "header_profile", "request_header_bytes", "poll_interval_s", "keepalive", "ws_compress", "duration_s",
    "events_published", "messages_expected", "messages_received", "messages_lost", "messages_duplicated",
    "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms",
    "bytes_down_tcp", "bytes_up_tcp", "bytes_down_payload", "bytes_up_payload", "bytes_down_overhead",
    "bytes_up_overhead", "tcp_segments", "tcp_segments_down", "tcp_segments_up", "bytes_tcpip_headers",
    "connections_opened", "connections_peak", "time_wait_end", "server_cpu_s", "server_rss_bytes",
    "loadgen_cpu_pct", "loop_lag_p99_ms", "saturated", "errors", "errors_connect", "errors_timeout",
    "errors_http_status", "errors_protocol", "errors_disconnect", "late_ticks", "window_start_ns",
    "window_end_ns",
    # Beyond the required columns:
    "workers", "send_interval_s", "cookie_bytes", "events_published_server", "server_deliveries",
    "server_cpu_unit_s",
    "server_connections_accepted", "connections_peak_clients", "stale_resumes", "reconnects", "requests_retried", "clients_late",
    "tcp_timestamps",
    # Stacks (TLS, HTTP/2 through the proxy) and the layer split: tcp = payload + http + tls + tls_handshake.
    "stack", "alpn", "tls_key_type", "bytes_down_http", "bytes_up_http", "bytes_down_tls", "bytes_up_tls",
    "bytes_tls_handshake", "bytes_down_tls_handshake", "bytes_up_tls_handshake", "proxy_cpu_s", "proxy_rss_bytes",
    "server_total_cpu_s", "server_total_rss_bytes", "bytes_down_h2_frame_headers", "bytes_up_h2_frame_headers",
    "bytes_down_hpack", "bytes_up_hpack", "bytes_down_h2_control", "bytes_up_h2_control", "h2_request_blocks",
    "h2_request_block_first_bytes", "h2_request_block_max_bytes", "h2_request_block_median_bytes", "h2_response_block_median_bytes",
    "executor", "load_hosts", "clock_uncertainty_ms", "server_external", "server_measured",
    # The limit that stopped the cell, one line (empty when none did): loadgen.summary.stopped_by.
    "stopped_by", "source_addresses",
    # The network path ([network]; loopback when all three are 0): what was asked, what was measured.
    *NETWORK_COLUMNS,
]  # fmt: skip

CONNECTION_COLUMNS = [
    "cell_id", "repeat", "worker", "client", "conn_seq", "opened_ns", "closed_ns", "bytes_down_tcp",
    "bytes_up_tcp", "segs_in", "segs_out", "bytes_down_payload", "bytes_up_payload", "bytes_down_plain",
    "bytes_up_plain", "bytes_down_tls_handshake", "bytes_up_tls_handshake", "alpn",
]  # fmt: skip


class OutputError(Exception):
    """The output folder cannot be written."""


def network_columns(network: NetworkConfig, measured: dict[str, Any]) -> dict[str, Any]:
    """The summary.csv columns of the network path: the configured values and what the path measured."""
    row: dict[str, Any] = {
        "rtt_ms": network.rtt_ms,
        "bandwidth_mbit": network.bandwidth_mbit,
        "loss_pct": network.loss_pct,
        "path_mechanism": measured.get("mechanism", MECHANISM_LOOPBACK),
    }
    for column in NETWORK_COLUMNS[4:]:
        row[column] = measured.get(column)
    return row


def cell_id(index: int, repeat: int) -> str:
    return f"c{index:03d}-r{repeat}"


def request_header_bytes(
    profile: HeaderProfile, transport: str, scenario: str, hostport: str, ws_compress: bool = False
) -> int:
    """Bytes of header lines on each request of a cell (the WebSocket handshake for ws)."""
    if TRANSPORTS[transport].handshake == "websocket":
        return header_block_bytes(profile.websocket_headers(hostport, "x" * 24, offer_deflate=ws_compress))
    if scenario == "echo":
        return header_block_bytes(profile.post_headers(hostport, "application/json", 0))
    return header_block_bytes(profile.fetch_headers(hostport))


def proxy_columns(
    server_cpu_s: float | None,
    server_rss_bytes: int | None,
    proxy_start: tuple[float, int] | None,
    proxy_end: tuple[float, int] | None,
) -> dict[str, Any]:
    """The TLS proxy's CPU seconds in the window and RSS at its end, and the server side's total (app + proxy).

    Without a proxy (``h1``) the totals are the app server's own figures.
    """
    proxy_cpu = proxy_end[0] - proxy_start[0] if proxy_start is not None and proxy_end is not None else None
    proxy_rss = proxy_end[1] if proxy_end is not None else None
    proxied = proxy_start is not None or proxy_end is not None
    total_cpu = None if server_cpu_s is None or (proxied and proxy_cpu is None) else server_cpu_s + (proxy_cpu or 0.0)
    total_rss = (
        None if server_rss_bytes is None or (proxied and proxy_rss is None) else server_rss_bytes + (proxy_rss or 0)
    )
    return {
        "proxy_cpu_s": proxy_cpu,
        "proxy_rss_bytes": proxy_rss,
        "server_total_cpu_s": total_cpu,
        "server_total_rss_bytes": total_rss,
    }


@dataclass
class CellSummary:
    row: dict[str, Any]
    histogram: str
    connections: list[dict[str, Any]]
    meta: dict[str, Any]
    saturation: list[str] = field(default_factory=list)


def summarize(run: CellRun, profile: HeaderProfile) -> CellSummary:
    """Merge a cell's worker results into its summary.csv row, histogram, connection records and run.json cell.

    The arithmetic lives in ``loadgen.summary``; ``run`` is read, never changed.
    """
    cell, load, feed, server = run.cell, run.cell.load, run.cell.feed, run.cell.server
    cid = cell_id(cell.index, run.repeat)
    plan = run.plan
    results = run.results
    histogram = merge_histograms(r.latency_encoded for r in results if r.latency_encoded)
    count = sum(r.latency_count for r in results)
    latency = summarize_latency(
        histogram, count, sum(r.latency_sum_ns for r in results), max((r.latency_max_ns for r in results), default=0)
    )
    records = [(r.worker, rec) for r in results for rec in r.records]
    wire = byte_totals([rec for _, rec in records])
    errors = error_counts(results)
    per_worker = worker_health(results)
    sat = saturation(per_worker, latency.p99_ms)
    if run.network:  # on an emulated path the delay lines are part of the instrument
        sat = replace(sat, reasons=sat.reasons + tuple(delay_line_saturation(run.network, cell.network.one_way_ms)))
    transport = TRANSPORTS[load.transport]
    counter = ("echoes", transport.echo_key) if load.scenario == "echo" else ("deliveries", load.transport)
    srv = server_deltas(run.stats_start, run.stats_end, counter, external=run.external)
    cpu_s = srv.cpu_s
    duration_s = (plan.window_end_ns - plan.window_start_ns) / 1e9 if plan else float("nan")
    # Feed events whose intended time lies in the window (in echo cells too: the feed runs, nobody reads it).
    events_published = (plan.seq_last - plan.seq_first + 1) if plan else 0
    messages = message_counts(results, load.clients, events_published, load.scenario == "feed", plan is not None)
    counter_errors = sum(r.counter_errors for r in results)
    late = sum(r.clients_late for r in results)
    clocks = [r.clock for r in results if r.clock is not None]
    clock = clock_summary(clocks, latency.p50_ms if count else None)
    status = cell_status(run.status, counter_errors)
    limit_errors = Counter[str]()
    for r in results:
        limit_errors.update(r.limit_errors)
    nofiles = [r.nofile_limit for r in results if r.nofile_limit is not None]
    memory = run.memory_available_end
    sources = run.sources or {}
    stopped = stopped_by(
        LimitEvidence(
            client_fd_errors=limit_errors[Limit.FD.value],
            client_nofile_limit=min(nofiles, default=None),
            port_errors=limit_errors[Limit.PORTS.value],
            ports_per_address=sources.get("ports_per_address"),
            source_addresses=max(1, len(sources.get("addresses", ()))),
            connect_timeouts=limit_errors[Limit.CONNECT_TIMEOUT.value],
            connect_timeout_s=plan.request_timeout_s if plan else 0.0,
            max_connections_503=srv.max_connections_503 or 0,
            max_connections=server.max_connections,
            listen_overflows=srv.listen_overflows,
            listen_backlog=srv.listen_backlog,
            server_connections_peak=srv.connections_peak,
            server_nofile_limit=srv.nofile_limit,
            server_fds_at_start=srv.fds_at_start,
            server_cpu_pct=cpu_percent(cpu_s, duration_s) if cpu_s is not None and duration_s > 0 else None,
            memory_available_bytes=memory[0] if memory else None,
            memory_total_bytes=memory[1] if memory else None,
            saturation=sat.reasons,
        )
    )
    warnings = [*cell_warnings(run.warnings, status, sat, messages, counter_errors, late), *clock.warnings]
    hostport = f"{plan.host}:{plan.port}" if plan else "127.0.0.1:0"
    row: dict[str, Any] = {
        "cell_id": cid,
        "repeat": run.repeat,
        "status": status,
        "transport": load.transport,
        "scenario": load.scenario,
        "clients": load.clients,
        "rate_hz": feed.rate_hz,
        "payload_bytes": feed.payload_bytes,
        "burst": feed.burst,
        "header_profile": load.header_profile,
        "request_header_bytes": request_header_bytes(
            profile, load.transport, load.scenario, hostport, server.ws_compress
        ),
        "poll_interval_s": load.poll_interval_s,
        "keepalive": server.keepalive,
        "ws_compress": server.ws_compress,
        "duration_s": duration_s,
        "events_published": events_published,
        "messages_expected": messages.expected,
        "messages_received": messages.received,
        "messages_lost": messages.lost,
        "messages_duplicated": messages.duplicated,
        "latency_mean_ms": latency.mean_ms,
        "latency_p50_ms": latency.p50_ms,
        "latency_p90_ms": latency.p90_ms,
        "latency_p99_ms": latency.p99_ms,
        "latency_max_ms": latency.max_ms,
        "bytes_down_tcp": wire.down_tcp,
        "bytes_up_tcp": wire.up_tcp,
        "bytes_down_payload": wire.down_payload,
        "bytes_up_payload": wire.up_payload,
        "bytes_down_overhead": wire.down_overhead,
        "bytes_up_overhead": wire.up_overhead,
        "tcp_segments": wire.segments,
        "tcp_segments_down": wire.segs_down,
        "tcp_segments_up": wire.segs_up,
        "bytes_tcpip_headers": wire.tcpip_header_bytes,
        "connections_opened": sum(r.connections_opened for r in results),
        "connections_peak": srv.connections_peak,
        "time_wait_end": run.time_wait_end,
        "server_cpu_s": cpu_s,
        "server_rss_bytes": srv.rss_bytes,
        "loadgen_cpu_pct": sat.busiest_cpu_pct,
        "loop_lag_p99_ms": sat.worst_lag_p99_ms,
        "saturated": sat.saturated,
        "errors": sum(errors.values()),
        **{f"errors_{k}": v for k, v in errors.items()},
        "late_ticks": srv.late_ticks,
        "window_start_ns": plan.window_start_ns if plan else None,
        "window_end_ns": plan.window_end_ns if plan else None,
        "workers": load.workers,
        "send_interval_s": load.send_interval_s,
        "cookie_bytes": load.cookie_bytes if load.header_profile == "browser" else 0,
        "events_published_server": srv.events_published,
        "server_deliveries": srv.deliveries,
        "server_cpu_unit_s": srv.cpu_unit_s,
        "server_connections_accepted": srv.connections_accepted,
        "connections_peak_clients": sum(r.connections_peak for r in results),
        "stale_resumes": sum(r.stale_resumes for r in results),
        "reconnects": sum(r.reconnects for r in results),
        "requests_retried": sum(r.requests_retried for r in results),
        "clients_late": late,
        "tcp_timestamps": wire.tcp_timestamps,
        "stack": load.stack,
        "alpn": ",".join(sorted({rec.alpn for _, rec in records if rec.alpn})),
        "tls_key_type": ("file" if load.tls_cert_file else load.tls_key_type) if STACKS[load.stack].tls else "",
        **layer_columns(rec for _, rec in records),
        **h2_columns([rec for _, rec in records]),
        **proxy_columns(cpu_s, srv.rss_bytes, run.proxy_usage_start, run.proxy_usage_end),
        "executor": load.executor,
        "load_hosts": len({host_label(r.host) for r in results if r.host}) or None,
        "clock_uncertainty_ms": clock.uncertainty_ns / 1e6 if clock.uncertainty_ns is not None else None,
        "server_external": run.external,
        "server_measured": bool(run.stats_start and run.stats_end),
        "stopped_by": stopped,
        "source_addresses": max(1, len(sources.get("addresses", ()))),
        **network_columns(cell.network, run.network),
    }
    connections = [
        {
            "cell_id": cid,
            "repeat": run.repeat,
            "worker": worker,
            "client": rec.client,
            "conn_seq": rec.conn_seq,
            "opened_ns": rec.opened_ns,
            "closed_ns": rec.closed_ns,
            "bytes_down_tcp": rec.bytes_down_tcp,
            "bytes_up_tcp": rec.bytes_up_tcp,
            "segs_in": rec.segs_in,
            "segs_out": rec.segs_out,
            "bytes_down_payload": rec.bytes_down_payload,
            "bytes_up_payload": rec.bytes_up_payload,
            "bytes_down_plain": rec.bytes_down_plain,
            "bytes_up_plain": rec.bytes_up_plain,
            "bytes_down_tls_handshake": rec.bytes_down_tls_handshake,
            "bytes_up_tls_handshake": rec.bytes_up_tls_handshake,
            "alpn": rec.alpn,
        }
        for worker, rec in records
    ]
    meta = {
        "cell_id": cid,
        "index": cell.index,
        "repeat": run.repeat,
        "varied": cell.varied,
        **cell.sections_dict(),  # feed, server, load (and any further section) as plain data
        "status": status,
        "window_start_ns": row["window_start_ns"],
        "window_end_ns": row["window_end_ns"],
        "anchor_ns": plan.anchor_ns if plan else None,
        "seq_first": plan.seq_first if plan else None,
        "seq_last": plan.seq_last if plan else None,
        "errors": errors,
        "warnings": warnings,
        "error_samples": [s for r in results for s in r.error_samples][:20],
        "workers": per_worker,
        "server_exit": run.server_exit,
        "latency_out_of_range": sum(r.latency_out_of_range for r in results),
        "h2_header_blocks": {
            "request": block_distribution(b for _, rec in records for b in rec.h2_request_blocks),
            "response": block_distribution(b for _, rec in records for b in rec.h2_response_blocks),
        },
        "tcp_info_failures": counter_errors,
        "network": run.network or None,
        "clock": {"runner": run.runner_clock, "uncertainty_ns": clock.uncertainty_ns}
        if run.runner_clock or clocks
        else None,
        "server_external": run.external,
        "sources": run.sources,
        "limit_errors": dict(limit_errors),
    }
    return CellSummary(row, encode_histogram(histogram), connections, meta, list(sat.reasons))


# --- the run folder ------------------------------------------------------------------------------------


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class RunFolder:
    """``<out>/.tmp-<stamp>-<name>-<pid>`` while running; ``<out>/<stamp>-<name>`` once finished."""

    def __init__(self, out: Path, config_name: str) -> None:
        self.out = out
        self.stamp = utc_stamp()
        self.name = f"{self.stamp}-{config_name}"
        self.tmp = out / f".tmp-{self.name}-{os.getpid()}"
        self._created_out = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()
            probe = self.tmp / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.tmp.rmdir()
            raise OutputError(f"{out}: cannot write results there: {exc.strerror or exc}") from None

    def discard(self) -> None:
        """Remove the temporary folder, and ``out`` too when this run created it (nothing written)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._created_out:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only when empty

    def finish(self) -> Path:
        """Rename to the final name (never over an existing folder) and point ``latest`` at it."""
        final = self.out / self.name
        n = 1
        while True:
            try:
                if final.exists():
                    raise FileExistsError
                os.rename(self.tmp, final)
                break
            except (FileExistsError, OSError) as exc:
                if not isinstance(exc, FileExistsError) and not final.exists():
                    raise
                n += 1
                final = self.out / f"{self.name}-{n}"
        link = self.out / "latest"
        tmp_link = self.out / f".latest-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(final.name)
        os.replace(tmp_link, link)
        return final


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_summary_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in SUMMARY_COLUMNS})


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return round(value, 6)
    return value


def write_histograms(path: Path, summaries: list[CellSummary]) -> None:
    table = pa.table(
        {
            "cell_id": pa.array([s.row["cell_id"] for s in summaries], pa.string()),
            "repeat": pa.array([s.row["repeat"] for s in summaries], pa.int64()),
            "kind": pa.array(["latency"] * len(summaries), pa.string()),
            "unit": pa.array(["us"] * len(summaries), pa.string()),
            "lowest": pa.array([HDR_LOWEST_US] * len(summaries), pa.int64()),
            "highest": pa.array([HDR_HIGHEST_US] * len(summaries), pa.int64()),
            "significant_digits": pa.array([HDR_SIGNIFICANT_DIGITS] * len(summaries), pa.int64()),
            "encoded": pa.array([s.histogram for s in summaries], pa.string()),
        }
    )
    pq.write_table(table, path)


def write_connections(path: Path, summaries: list[CellSummary]) -> None:
    rows = [c for s in summaries for c in s.connections]
    types = {"cell_id": pa.string(), "closed_ns": pa.int64(), "alpn": pa.string()}
    table = pa.table({col: pa.array([r[col] for r in rows], types.get(col, pa.int64())) for col in CONNECTION_COLUMNS})
    pq.write_table(table, path)


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "tcp_timestamps_sysctl": _read_sysctl("/proc/sys/net/ipv4/tcp_timestamps"),
        # The unit of the server's CPU counters (psutil reads /proc/<pid>/stat): a window under 1 tick reads 0.
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
    }


def _read_sysctl(path: str) -> str | None:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("pushbench", "aiohttp", "uvloop", "hdrhistogram", "psutil", "pyarrow", "pandas", "rich"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def git_state() -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(dirty)


def write_run(
    folder: RunFolder,
    *,
    config_source: str,
    overrides: list[str],
    config: dict[str, Any],
    profiles: dict[str, dict[str, Any]],
    summaries: list[CellSummary],
    started: float,
    ended: float,
    target: dict[str, Any] | None = None,
    executor: dict[str, Any] | None = None,
) -> Path:
    """Write every file, run.json last, and rename the folder into place."""
    write_summary_csv(folder.tmp / "summary.csv", [s.row for s in summaries])
    write_histograms(folder.tmp / "histograms.parquet", summaries)
    write_connections(folder.tmp / "connections.parquet", summaries)
    commit, dirty = git_state()
    run = {
        "format_version": FORMAT_VERSION,
        "tool": "pushbench",
        "config_source": config_source,
        "overrides": overrides,
        "config": config,
        "machine": machine_info(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "header_profiles": profiles,
        "transports": transports.describe(),
        "stacks": stacks.describe(),
        "target": target or {"url": None, "external": False},
        "executor": executor or {"kind": "local"},
        "cells": [_json_safe(s.meta) for s in summaries],
    }
    tmp = folder.tmp / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=2, default=str) + "\n")
    os.replace(tmp, folder.tmp / "run.json")
    return folder.finish()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return _clean(value)
