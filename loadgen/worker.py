"""One client worker: its own event loop running a share of the clients through the cell's plan.

``run_worker`` is what a shard (``loadgen.shard``) runs, in a local process or on a Dask worker; it returns one
``WorkerResult``. Every wait inside is bounded by the plan's stop time.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import resource
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen import echo
from loadgen.client import ClientContext, ClientState, Plan
from loadgen.conn import ERROR_KINDS, ConnRecord, Phase, WindowBook
from loadgen.echo import echo_due
from loadgen.metrics import SeqTracker, due_index_range, encode_histogram, new_histogram, record_us
from pushbench.gcpolicy import cyclic_gc
from pushbench.stacks import DEFAULT_STACK, STACKS
from pushbench.transports import TRANSPORTS
from pushbench.units import NS_PER_S

LAG_PROBE_INTERVAL_S = 0.01
STOP_GRACE_S = 1.0

ClientMain = Callable[[ClientContext, ClientState], Awaitable[None]]


def client_main(transport: str, scenario: str, stack: str = DEFAULT_STACK) -> ClientMain:
    """The client coroutine of a transport and scenario: its client module's ``run_feed``, or for echo its
    ``run_echo`` (WebSocket frames) and else ``POST /echo`` over HTTP. A stack with clients of its own (HTTP/2)
    serves every transport from its module."""
    module = importlib.import_module(STACKS[stack].client_module or TRANSPORTS[transport].client_module)
    if scenario == "echo":
        main: ClientMain = getattr(module, "run_echo", echo.run_echo)
        return main
    feed_main: ClientMain = module.run_feed
    return feed_main


def assign_clients(clients: int, workers: int) -> list[list[int]]:
    """Client indices of each worker, round-robin (worker w gets w, w + workers, ...)."""
    return [list(range(w, clients, workers)) for w in range(min(workers, clients))]


@dataclass
class WorkerResult:
    worker: int
    clients: int
    loop: str
    latency_encoded: str = ""
    latency_count: int = 0
    latency_sum_ns: int = 0
    latency_max_ns: int = 0
    latency_out_of_range: int = 0
    messages_expected: int = 0
    messages_received: int = 0
    messages_lost: int = 0
    messages_duplicated: int = 0
    records: list[ConnRecord] = field(default_factory=list)
    connections_opened: int = 0
    connections_peak: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    runqueue_wait_s: float | None = None  # runnable but waiting for a core inside the window (Linux schedstat)
    lag_encoded: str = ""
    stale_resumes: int = 0
    reconnects: int = 0
    requests_retried: int = 0
    limit_errors: dict[str, int] = field(default_factory=dict)  # client errors an OS limit caused (conn.Limit)
    nofile_limit: int | None = None  # the worker's RLIMIT_NOFILE (soft) while it ran
    counter_errors: int = 0
    clients_late: int = 0  # feed clients not subscribed when the window started: they miss its first events
    failure: str | None = None
    host: dict[str, Any] | None = None  # where the shard ran (loadgen.shard.host_record)
    clock: dict[str, Any] | None = None  # its clock offset to the server (loadgen.shard.clock_record), if measured


def tracker_for(plan: Plan, client: int) -> SeqTracker:
    """The seqs a client should receive inside the window: feed events, or its own echo messages."""
    if plan.scenario == "echo":
        phase, interval = echo_due(plan, client)
        first_k, last_k = due_index_range(plan.anchor_ns, phase, interval, plan.window_start_ns, plan.window_end_ns)
        return SeqTracker(first_k + 1, last_k + 1)
    return SeqTracker(plan.seq_first, plan.seq_last)


def process_cpu_s() -> float:
    """This process's user + system CPU seconds, by a system call: no descriptor needed, so it is read at the
    descriptor limit too (psutil opens /proc/self/stat)."""
    times = os.times()
    return times.user + times.system


def runqueue_wait_s() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (``/proc/self/schedstat``); None if unknown.

    Event-loop lag at low CPU is mostly this: a busy machine (the server, other processes) keeps the
    worker off the CPU, so a saturation warning can say which of the two it was.
    """
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / NS_PER_S
    except (OSError, ValueError, IndexError):
        return None


class LagProbe:
    """How late a periodic timer fires: the loop's responsiveness under the load (recorded inside the window).

    One loop timer per tick whose callback reads the clock (no task and no future per tick, as ``asyncio.sleep``
    would make); the lags are kept in an array and put into the HDR histogram when it is read. A tick delayed by
    the window-start TCP_INFO sweep (one getsockopt per open socket, ~10 µs each: 5 ms for 500 sockets) is not
    recorded: that stall is pushbench's bookkeeping, not the clients' work.
    """

    def __init__(self, book: WindowBook, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self.book = book
        self.interval_s = interval_s
        self.lags_us = array("q")
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = time.monotonic() + self.interval_s
        self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = time.monotonic()
        due, book = self._due, self.book
        if book.phase is Phase.IN and book.sweep_end_mono < due:
            self.lags_us.append(int((now - due) * 1e6))
        due += self.interval_s
        if due < now:
            due = now + self.interval_s
        self._due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self._tick)

    def histogram(self) -> HdrHistogram:
        """The recorded lags (µs, each at least 1)."""
        histogram = new_histogram()
        record_us(histogram, self.lags_us)
        return histogram


async def run_worker(
    worker: int, indices: list[int], plan: Plan, loop_name: str, clock_offset_ns: int = 0
) -> WorkerResult:
    """Run one worker's clients through the plan (times on this host's clock); ``clock_offset_ns`` (server clock
    minus this host's) corrects feed latencies, whose intended times are the server's.

    Without CPython's cyclic collector unless ``load.cyclic_gc``: its pauses over thousands of clients' objects
    would delay the timestamps.
    """
    with cyclic_gc(plan.cyclic_gc):
        return await _run_clients(worker, indices, plan, loop_name, clock_offset_ns)


async def _run_clients(
    worker: int, indices: list[int], plan: Plan, loop_name: str, clock_offset_ns: int
) -> WorkerResult:
    ctx = ClientContext(plan, clock_offset_ns=clock_offset_ns if plan.scenario == "feed" else 0)
    states = [ClientState(i, random.Random(plan.seed * 7919 + i), tracker_for(plan, i)) for i in indices]
    main = client_main(plan.transport, plan.scenario, plan.stack)
    result = WorkerResult(worker, len(indices), loop_name)

    async def start_client(state: ClientState) -> None:
        offset_ns = round(plan.ramp_up_s * NS_PER_S * state.index / max(1, plan.clients))
        if await ctx.sleep_until(plan.anchor_ns + offset_ns):
            await main(ctx, state)

    async def window() -> None:
        await asyncio.sleep(max(0.0, (plan.window_start_ns - time.time_ns()) / NS_PER_S))
        ctx.book.start()
        cpu0 = process_cpu_s()
        wait0 = runqueue_wait_s()
        wall0 = time.monotonic()
        await asyncio.sleep(max(0.0, (plan.window_end_ns - time.time_ns()) / NS_PER_S))
        ctx.book.end()
        result.cpu_s = process_cpu_s() - cpu0
        wait1 = runqueue_wait_s()
        result.runqueue_wait_s = wait1 - wait0 if wait0 is not None and wait1 is not None else None
        result.wall_s = time.monotonic() - wall0

    tasks = [asyncio.create_task(start_client(s)) for s in states]
    probe = LagProbe(ctx.book)
    probe.start()
    window_task = asyncio.create_task(window())
    await asyncio.sleep(max(0.0, (plan.stop_ns - time.time_ns()) / NS_PER_S))
    if not window_task.done():  # the clock jumped or the loop stalled: end the window now
        window_task.cancel()
        ctx.book.end()
    ctx.stop.set()
    # The window is over and measured: clients blocked in a read are cancelled, not waited for.
    probe.stop()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for conn in list(ctx.book.open):
        conn.abort()

    for state in states:
        if plan.scenario == "feed" and (state.subscribed_ns is None or state.subscribed_ns > plan.window_start_ns):
            result.clients_late += 1
        tr = state.tracker
        result.messages_expected += tr.expected
        result.messages_received += tr.received
        result.messages_lost += tr.lost
        result.messages_duplicated += tr.duplicated
    rec = ctx.latency
    result.latency_encoded = rec.encode()
    result.latency_count, result.latency_sum_ns, result.latency_max_ns = rec.count, rec.sum_ns, rec.max_ns
    result.latency_out_of_range = rec.out_of_range
    result.records = ctx.book.records
    result.connections_opened = ctx.book.opened_in_window
    result.connections_peak = ctx.book.concurrent_peak
    result.errors = {k: ctx.errors.get(k, 0) for k in ERROR_KINDS}
    result.error_samples = ctx.error_samples
    result.lag_encoded = encode_histogram(probe.histogram())
    result.stale_resumes = ctx.stale_resumes
    result.reconnects = ctx.reconnects
    result.requests_retried = ctx.requests_retried
    result.limit_errors = dict(ctx.limit_errors)
    result.nofile_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    result.counter_errors = ctx.book.counter_errors
    return result
