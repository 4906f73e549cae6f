"""``python -m loadgen --config FILE [--set section.key=VALUE ...] [--out DIR]``: run every cell, write results."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from loadgen.executors import Executor, ExecutorUnavailable, make_executor
from loadgen.headers import HeaderProfile, ProfileError, header_block_bytes, make_profile
from loadgen.netpath import path_requirements
from loadgen.proxy import ProxyUnavailable, find_haproxy
from loadgen.results import CellSummary, OutputError, RunFolder, summarize, write_run
from loadgen.runner import cell_seconds, log_dir, run_cell
from loadgen.tls import CertificateError, CertStore, check_ca_file
from pushbench import netns
from pushbench.config import Cell, Config, ConfigError, expand_cells, load_config
from pushbench.stacks import STACKS

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadgen", description=__doc__)
    parser.add_argument("--config", required=True, help="TOML config file (see configs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config key; VALUE is a TOML value (repeatable)",
    )  # fmt: skip
    parser.add_argument("--out", default="results", help="folder that receives the run folder (default: results)")
    return parser.parse_args(argv)


def profiles_for(cells: list[Cell], source: str) -> tuple[dict[int, HeaderProfile], list[str]]:
    """The header profile of every cell, and every problem (a missing browser profile is a config error)."""
    profiles: dict[int, HeaderProfile] = {}
    problems: list[str] = []
    for cell in cells:
        try:
            profiles[cell.index] = make_profile(cell.load)
        except ProfileError as exc:
            message = f"{source}: load.header_profile: {exc}"
            if message not in problems:
                problems.append(message)
    return profiles, problems


def network_problems(cells: list[Cell], source: str) -> list[str]:
    """What keeps emulated-path cells from running: privileges and tools, or a setup the path cannot hold
    (the path is two namespaces on this machine: the server the runner starts and local shards)."""
    emulated = [c for c in cells if c.network.emulated]
    problems = [f"{source}: network: {p}" for p in path_requirements([c.network for c in emulated])]
    if any(c.target.url for c in emulated):
        problems.append(
            f"{source}: network: an emulated path needs a server the load generator starts; remove target.url"
        )
    if any(c.load.executor != "local" for c in emulated):
        problems.append(
            f"{source}: network: an emulated path runs the clients on this machine; use load.executor = 'local'"
        )
    return problems


def stack_problems(cells: list[Cell], source: str, certs: CertStore) -> list[str]:
    """What keeps the TLS stacks from running: no HAProxy, an unusable certificate (each named once)."""
    problems: list[str] = []
    for cell in cells:
        if not STACKS[cell.load.stack].tls:
            continue
        if cell.target.url:  # an https target: no proxy, its own certificate; the clients trust target.ca_file
            if cell.target.ca_file:
                try:
                    check_ca_file(Path(cell.target.ca_file))
                except CertificateError as exc:
                    message = f"{source}: target.ca_file: {exc}"
                    if message not in problems:
                        problems.append(message)
            continue
        try:
            find_haproxy()
            certs.for_load(cell.load)
        except ProxyUnavailable as exc:
            message = f"{source}: load.stack = {cell.load.stack!r}: {exc}"
        except CertificateError as exc:
            message = f"{source}: load.tls_cert_file: {exc}"
        else:
            continue
        if message not in problems:
            problems.append(message)
    return problems


def profile_record(profile: HeaderProfile) -> dict[str, Any]:
    host = "127.0.0.1:PORT"
    return {
        "request_header_bytes": header_block_bytes(profile.fetch_headers(host)),
        "websocket_request_header_bytes": header_block_bytes(profile.websocket_headers(host, "x" * 24, False)),
        "source": profile.source,
        "cookie_bytes": profile.cookie_bytes,
        "fetch_headers": [list(h) for h in profile.fetch_headers("{host}")],
        "websocket_headers": [list(h) for h in profile.websocket_headers("{host}", "{key}", False)],
        **profile.details,
    }


def summary_table(summaries: list[CellSummary]) -> Table:
    """Per cell: what was delivered, how fast, and what each delivered message cost on the wire (TCP bytes)."""
    table = Table(title="pushbench: one row per cell (B/msg = TCP payload bytes per message received)")
    columns = [
        ("cell", "cell_id"), ("status", "status"), ("transport", "transport"), ("stack", "stack"), ("scenario", "scenario"),
        ("clients", "clients"), ("recv/exp", None), ("lost", "messages_lost"), ("dup", "messages_duplicated"),
        ("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"), ("down B/msg", None),
        ("up B/msg", None), ("conns", "connections_opened"), ("errors", "errors"), ("sat", "saturated"),
    ]  # fmt: skip
    for title, _ in columns:
        table.add_column(
            title, justify="right" if title not in ("cell", "status", "transport", "stack", "scenario") else "left"
        )
    for s in summaries:
        r = s.row
        received = r["messages_received"] or 0
        cells = []
        for title, key in columns:
            if title == "recv/exp":
                cells.append(f"{received}/{r['messages_expected']}")
            elif title == "down B/msg":
                cells.append(f"{r['bytes_down_tcp'] / received:.1f}" if received else "-")
            elif title == "up B/msg":
                cells.append(f"{r['bytes_up_tcp'] / received:.1f}" if received else "-")
            else:
                value = r.get(key or "")
                cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    return table


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM behaves like Ctrl-C: servers and workers are stopped, no results folder is left behind."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    err = Console(stderr=True, highlight=False)
    problems: list[str] = []
    # Every problem is named at once (the config's, the header profiles', --out's) before anything runs.
    config = None
    profiles: dict[int, HeaderProfile] = {}
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        problems.extend(line for line in str(exc).splitlines() if line.strip())
    cells = expand_cells(config) if config is not None else []
    certs = CertStore()
    if config is not None:
        profiles, problems = profiles_for(cells, config.source)
        problems += stack_problems(cells, config.source, certs)
        problems += network_problems(cells, config.source)
    folder: RunFolder | None = None
    try:
        folder = RunFolder(Path(args.out), config.name if config is not None else Path(args.config).stem)
    except OutputError as exc:
        problems.append(f"--out {exc}")
    executor: Executor | None = None
    if config is not None and not problems:
        try:
            executor = make_executor(config.load)
        except ExecutorUnavailable as exc:
            problems.append(f"{config.source}: {exc}")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        if folder is not None:
            folder.discard()
        certs.close()
        return EXIT_CONFIG
    assert folder is not None and config is not None and executor is not None
    try:
        return _run(args, config, cells, profiles, folder, certs, executor, err)
    finally:
        certs.close()
        executor.close()


def _run(
    args: argparse.Namespace,
    config: Config,
    cells: list[Cell],
    profiles: dict[int, HeaderProfile],
    folder: RunFolder,
    certs: CertStore,
    executor: Executor,
    err: Console,
) -> int:
    target_url = config.target.url
    executor_record = executor.describe()
    if any(cell.network.emulated for cell in cells):
        stale = netns.remove_stale()
        if stale:
            err.print(f"removed network namespaces left by pushbench runs that died: {', '.join(stale)}")

    runs = [(cell, r) for cell in cells for r in range(1, cell.load.repeat + 1)]
    estimates = [cell_seconds(cell) for cell, _ in runs]
    started = time.time()
    summaries: list[CellSummary] = []
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=err, transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task("starting", total=sum(estimates))
            done_s = 0.0
            for i, (cell, repeat) in enumerate(runs):
                label = ", ".join(f"{k}={v}" for k, v in cell.varied.items()) or cell.load.transport
                progress.update(task, description=f"cell {i + 1}/{len(runs)} [{label}] r{repeat}")
                cell_started = time.monotonic()

                def tick(base: float = done_s, est: float = estimates[i], t0: float = cell_started) -> None:
                    progress.update(task, completed=base + min(est, time.monotonic() - t0))

                run = run_cell(cell, repeat, profiles[cell.index], log_dir(), tick, certs, executor)
                summary = summarize(run, profiles[cell.index])
                summaries.append(summary)
                done_s += estimates[i]
                progress.update(task, completed=done_s)
                for warning in summary.meta["warnings"]:
                    progress.console.print(f"[yellow]warning[/] {summary.row['cell_id']}: {warning}")
                if summary.row["stopped_by"]:
                    progress.console.print(f"[red]stopped by[/] {summary.row['cell_id']}: {summary.row['stopped_by']}")
        used = {p.name: profile_record(p) for p in profiles.values()}
        final = write_run(
            folder,
            config_source=config.source,
            overrides=list(args.overrides),
            config=config.to_dict(),
            profiles=used,
            summaries=summaries,
            started=started,
            ended=time.time(),
            target={
                "url": target_url or None,
                "external": bool(target_url),
                "measured": any(s.row["server_measured"] for s in summaries),
            },
            executor=executor_record,
        )
    except KeyboardInterrupt:
        folder.discard()
        print("interrupted: no results folder written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        folder.discard()
        raise
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=160)  # piped: do not squeeze the table into 80 columns
    out.print(summary_table(summaries))
    print(f"results: {final}")
    bad = [s.row["cell_id"] for s in summaries if s.row["status"] != "ok"]
    if bad:
        print(f"cells not ok: {', '.join(bad)} (see warnings in run.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
