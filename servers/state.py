"""Shared server state under typed AppKeys, the /stats counters, and helpers every transport uses."""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil
from aiohttp import web

from pushbench.config import Sections
from pushbench.oslimits import read_listen_overflows
from pushbench.transports import TRANSPORTS, echo_keys
from servers.fanout import Fanout
from servers.feed import Event, Feed, StaleCursor

# getrusage(RUSAGE_SELF) counts user and system time each in whole microseconds (struct timeval). Linux computes them
# from the scheduler's runtime of all the process's threads (sum_exec_runtime, ns), split between user and system in
# the ratio of the tick samples (kernel/sched/cputime.c, cputime_adjust): their sum is the process's CPU to the
# microsecond, as its CPU clock (CLOCK_PROCESS_CPUTIME_ID) counts it. os.times() reads the same in 10-ms ticks.
CPU_UNIT_S = 1e-6


@dataclass
class Stats:
    """Counters served at GET /stats. Every number here is counted by the server as it happens."""

    started_mono: float = field(default_factory=time.monotonic)
    deliveries: Counter[str] = field(default_factory=Counter)  # events handed to the socket, per transport
    requests: Counter[str] = field(default_factory=Counter)  # HTTP requests / WS or SSE sessions, per endpoint
    connections_accepted: int = 0
    connections_open: int = 0
    connections_peak: int = 0
    echoes: Counter[str] = field(default_factory=Counter)  # echo messages answered, by Transport.echo_key
    stale_cursors: int = 0  # requests whose cursor had left the history
    slow_client_drops: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # error responses and closes, by kind
    # Descriptors: the limit, and how many the process held before its first connection (so the connection count
    # at which it runs out is known; the load generator names that limit when a cell reaches it).
    nofile_limit: int = field(default_factory=lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    fds_at_start: int | None = None
    # The network namespace's count of connection attempts dropped on a full accept queue, when the server started
    # listening (the kernel counts for every listener in the namespace, not per socket).
    listen_overflows_at_start: int | None = None
    listen_backlog: int | None = None  # what the server asked for, capped by net.core.somaxconn
    last_rss_bytes: int = 0

    def connection_made(self) -> None:
        self.connections_accepted += 1
        self.connections_open += 1
        self.connections_peak = max(self.connections_peak, self.connections_open)

    def connection_lost(self) -> None:
        self.connections_open -= 1

    def snapshot(self, feed: Feed, process: psutil.Process) -> dict[str, Any]:
        cpu = resource.getrusage(resource.RUSAGE_SELF)  # a system call, no descriptor: answers at the fd limit too
        with contextlib.suppress(OSError):  # reading /proc needs one: the last reading then
            self.last_rss_bytes = process.memory_info().rss
        return {
            "events_published": feed.events_published,
            "latest_seq": feed.latest_seq,
            "oldest_seq": feed.oldest_seq,
            "ticks": feed.ticks,
            "late_ticks": feed.late_ticks,
            "deliveries": {t: self.deliveries[t] for t in TRANSPORTS},
            "requests": dict(self.requests),
            "echoes": {k: self.echoes[k] for k in echo_keys()},
            "connections_accepted": self.connections_accepted,
            "connections_open": self.connections_open,
            "connections_peak": self.connections_peak,
            "stale_cursors": self.stale_cursors,
            "slow_client_drops": self.slow_client_drops,
            "rejected": dict(self.rejected),
            "cpu_user_s": cpu.ru_utime,
            "cpu_system_s": cpu.ru_stime,
            "cpu_unit_s": CPU_UNIT_S,  # the step of each of cpu_user_s and cpu_system_s
            "rss_bytes": self.last_rss_bytes,
            "cyclic_gc": gc.isenabled(),  # server.cyclic_gc: CPython's cyclic garbage collector ran
            "nofile_limit": self.nofile_limit,
            "fds_at_start": self.fds_at_start,
            "listen_backlog": self.listen_backlog,
            "listen_overflows_at_start": self.listen_overflows_at_start,
            "listen_overflows": read_listen_overflows(),
            "uptime_s": time.monotonic() - self.started_mono,
            "pid": process.pid,
        }


@dataclass
class ServerState:
    config: Sections
    feed: Feed
    stats: Stats
    process: psutil.Process
    fanout: Fanout


STATE = web.AppKey("state", ServerState)


def state(request: web.Request) -> ServerState:
    return request.app[STATE]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def json_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error carrying a short JSON body; never a stack trace."""
    text = json.dumps({"error": message, "status": status, **extra})
    if status == 413:  # its constructor wants the sizes for a default text we replace anyway
        return web.HTTPRequestEntityTooLarge(0, 0, text=text, content_type="application/json")
    return _STATUS_EXC[status](text=text, content_type="application/json")


_STATUS_EXC: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    405: web.HTTPMethodNotAllowed,
    410: web.HTTPGone,
    413: web.HTTPRequestEntityTooLarge,
    503: web.HTTPServiceUnavailable,
}


def parse_cursor(request: web.Request, name: str = "after") -> int | None:
    """The ``after`` query parameter as a non-negative int, None when absent; 400 when malformed."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        state(request).stats.rejected["bad_cursor"] += 1
        raise json_error(400, f"{name} must be a non-negative integer below 10**18, got {raw[:40]!r}")
    return int(raw)


def stale_cursor_error(request: web.Request, exc: StaleCursor) -> web.HTTPException:
    """410 Gone: the client's resume point left the history, so it knows it lost events."""
    state(request).stats.stale_cursors += 1
    return json_error(410, str(exc), after=exc.after, oldest=exc.oldest, latest=exc.latest)


def events_after(request: web.Request, after: int) -> list[Event]:
    """The events after a resume point; 410 Gone (the client learns what it lost) when it left the history."""
    try:
        return state(request).feed.events_after(after)
    except StaleCursor as exc:
        raise stale_cursor_error(request, exc) from None


def check_future_cursor(request: web.Request, after: int) -> None:
    """A cursor beyond the latest seq cannot come from this server: 400, never a silent hang."""
    latest = state(request).feed.latest_seq
    if after > latest:
        state(request).stats.rejected["bad_cursor"] += 1
        raise json_error(400, f"after={after} is beyond the latest event {latest}", latest=latest)
