"""Shared fixtures: real servers on 127.0.0.1 port 0, in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pushbench.config import default_config
from servers.app import count_connections, make_app
from servers.state import STATE, ServerState

ROOT = Path(__file__).resolve().parent.parent
# Scale every timeout in the tests on slow machines: PUSHBENCH_TIMEOUT_FACTOR=3 make test
TIMEOUT_FACTOR = float(os.environ.get("PUSHBENCH_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


@dataclass
class RunningServer:
    url: str
    host: str
    port: int
    app: web.Application
    runner: web.AppRunner | None = None

    @property
    def state(self) -> ServerState:
        return self.app[STATE]


@asynccontextmanager
async def running_server(*overrides: str) -> AsyncIterator[RunningServer]:
    """An in-process server (real aiohttp app, real socket on 127.0.0.1:0) for one test."""
    config = default_config(overrides)
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    count_connections(runner, app[STATE].stats)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", "127.0.0.1", port, app, runner)
    finally:
        await runner.cleanup()


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    port: int

    def stop(self, sig: int | None = None) -> int:
        import signal as _signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            return self.proc.wait(timeout(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_server_process(*args: str) -> ServerProcess:
    """``python -m servers ARGS`` in a subprocess; waits for its ``serving http://HOST:PORT`` line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("serving http://"):
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"server did not start: {line!r} {err}")
    url = line.removeprefix("serving ")
    return ServerProcess(proc, url, int(url.rsplit(":", 1)[1]))


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        sp = start_server_process(*args)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()
        for stream in (sp.proc.stdout, sp.proc.stderr):
            if stream:
                stream.close()


def run(coro: Any) -> Any:
    """Run one async test body with a hard timeout (no pytest-asyncio needed)."""
    return asyncio.run(asyncio.wait_for(coro, timeout(30)))


def get_stats(url: str) -> dict[str, Any]:
    """A server's ``GET /stats``, over a real socket."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats", timeout=timeout(5)) as answer:
        return dict(json.load(answer))
