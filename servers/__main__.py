"""``python -m servers --config FILE [--set section.key=VALUE ...]``: serve every transport on one port."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from pushbench.config import ConfigError, Sections, default_config, load_config
from pushbench.gcpolicy import cyclic_gc
from pushbench.oslimits import listen_backlog, raise_nofile_limit, read_listen_overflows
from servers.app import count_connections, make_app
from servers.state import STATE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m servers", description=__doc__)
    parser.add_argument("--config", help="TOML config file (defaults apply when omitted)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key; VALUE is a TOML value (repeatable)",
    )
    return parser.parse_args(argv)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_all_interfaces(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def drop_all_connections(runner: web.AppRunner) -> None:
    """SIGUSR1: cut every client connection at once (fault injection; clients must resume)."""
    server = runner.server
    if server is None:
        return
    for handler in server.connections:
        if handler.transport is not None:
            handler.transport.abort()
    print(f"dropped {len(server.connections)} connections on SIGUSR1", file=sys.stderr, flush=True)


async def serve(config: Sections) -> None:
    """Run until SIGINT/SIGTERM, then shut down cleanly (WS 1001, held long polls answered)."""
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    count_connections(runner, app[STATE].stats)
    host, port = config.server.host, config.server.port
    backlog = config.server.listen_backlog
    stats = app[STATE].stats
    stats.listen_backlog = listen_backlog(backlog)
    stats.listen_overflows_at_start = read_listen_overflows()
    site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True)
    await site.start()
    bound_port = runner.addresses[0][1]
    app[STATE].stats.fds_at_start = app[STATE].process.num_fds()
    print(f"serving http://{url_host(host)}:{bound_port}", flush=True)
    if is_all_interfaces(host):
        print(
            f"warning: bound to all interfaces ({host}); anyone who can reach this host can connect",
            file=sys.stderr,
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, drop_all_connections, runner)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (it is a dependency on Linux), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()  # one descriptor per client connection
    try:
        if args.config == "":  # `--config "$CONFIG"` with CONFIG unset must not silently mean the defaults
            raise ConfigError("--config", ["empty file name"])
        config = load_config(args.config, args.overrides) if args.config else default_config(args.overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        with cyclic_gc(config.server.cyclic_gc):  # off by default: its pauses would land in the latencies
            run_loop(serve(config))
    except OSError as exc:
        print(f"error: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
