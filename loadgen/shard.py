"""A shard: one client worker's work for one cell, wherever it runs (a local process or a Dask worker).

``run_shard`` is the whole of it: estimate the clock offset to the server (when the plan asks), run the
worker's clients on its own event loop (``loadgen.worker.run_worker``), estimate the offset again, and return
one ``WorkerResult`` with the host it ran on. ``dask_shard`` is the same, pinned to a core of its own, as a
picklable top-level function for ``distributed.Client.submit``. Results are merged by ``loadgen.results``,
the same way whichever executor ran them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import socket
import ssl
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from loadgen.client import Plan
from loadgen.clock import ClockOffset, Exchange, correction_uncertainty_ns, estimate_offset
from loadgen.tls import client_context
from loadgen.worker import WorkerResult, run_worker
from pushbench import netns
from pushbench.oslimits import raise_nofile_limit

CLOCK_EXCHANGES = 8
CLOCK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ShardSpec:
    """Which clients a shard runs (client indices, round-robin over shards) and how."""

    worker: int  # the shard's number in the cell, 0-based
    indices: list[int]
    use_uvloop: bool
    netns: str | None = None  # an emulated path's client namespace: a local shard enters it before any socket


class ShardError(Exception):
    """The shard could not run as planned (no free core, started after its schedule began)."""


def event_loop_runner(use_uvloop: bool) -> tuple[Callable[[Any], Any], str]:
    """``uvloop.run`` when wanted and installed, else ``asyncio.run``; and the loop's name."""
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.run, "uvloop"
    return asyncio.run, "asyncio"


# --- the clock --------------------------------------------------------------------------------------------


async def time_exchanges(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None, count: int = CLOCK_EXCHANGES
) -> tuple[list[Exchange], str]:
    """``count`` GET /time exchanges on one kept-alive connection; and this host's address on it.

    Raw HTTP/1.1 with Content-Length framing, so little but the network sits between the two clock readings.
    Raises OSError/ValueError when the server has no usable /time.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host if ssl_context else None),
        CLOCK_TIMEOUT_S,
    )
    try:
        local = writer.get_extra_info("sockname")[0]
        request = f"GET /time HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        exchanges = []
        for _ in range(count):
            sent = time.time_ns()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOCK_TIMEOUT_S)
            received = time.time_ns()  # the answer is in; its body follows in the same segment
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 200"):
                raise ValueError(f"GET /time answered {lines[0]!r}")
            length = next(
                (int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.strip().lower() == "content-length"),
                None,
            )
            if length is None:
                raise ValueError("GET /time answered without Content-Length")
            body = await asyncio.wait_for(reader.readexactly(length), CLOCK_TIMEOUT_S)
            server_ns = json.loads(body)["server_time_ns"]
            if isinstance(server_ns, bool) or not isinstance(server_ns, int):
                raise ValueError(f"server_time_ns is not an integer: {server_ns!r}")
            exchanges.append(Exchange(sent, server_ns, received))
        return exchanges, str(local)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def measure_offset(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[ClockOffset | None, str | None, str | None]:
    """(estimate, this host's address toward the server, the problem when there is no estimate)."""
    try:
        exchanges, local = await time_exchanges(host, port, ssl_context)
    except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    return estimate_offset(exchanges), local, None


def shifted(plan: Plan, offset_ns: int) -> Plan:
    """The plan's times (the server's clock) on this host's clock: server time minus the offset."""
    return dataclasses.replace(
        plan,
        anchor_ns=plan.anchor_ns - offset_ns,
        window_start_ns=plan.window_start_ns - offset_ns,
        window_end_ns=plan.window_end_ns - offset_ns,
        stop_ns=plan.stop_ns - offset_ns,
    )


def clock_record(before: ClockOffset | None, after: ClockOffset | None, problem: str | None) -> dict[str, Any]:
    """What run.json keeps of a shard's clock: both estimates, the offset applied and its uncertainty."""
    return {
        "before": before.to_json() if before else None,
        "after": after.to_json() if after else None,
        "applied_offset_ns": before.offset_ns if before else 0,
        "uncertainty_ns": correction_uncertainty_ns(before, after) if before else None,
        "problem": problem,
    }


# --- the host ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def host_record(executor: str, core: int | None, address: str | None) -> dict[str, Any]:
    """Where a shard ran: enough to tell load hosts apart (namespaces share a hostname, not an address)."""
    record: dict[str, Any] = {
        "executor": executor,
        "hostname": socket.gethostname(),
        "address": address,
        "pid": os.getpid(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "core": core,
    }
    if executor == "dask":  # (importing distributed costs a local worker a second for nothing)
        with contextlib.suppress(ImportError, ValueError):
            from distributed import get_worker

            record["dask_worker"] = get_worker().address
    return record


# --- the shard --------------------------------------------------------------------------------------------


async def shard_main(spec: ShardSpec, plan: Plan, loop_name: str, executor: str, core: int | None) -> WorkerResult:
    before: ClockOffset | None = None
    problem = address = None
    # Over TLS when the clients use it (an https target), on an HTTP/1.1 connection of its own either way.
    context = client_context(plan.stack_spec, plan.ca_file, ("http/1.1",)) if plan.stack_spec.tls else None
    if plan.clock_sync:
        before, address, problem = await measure_offset(plan.host, plan.port, context)
    offset = before.offset_ns if before else 0
    late_ns = time.time_ns() + offset - plan.anchor_ns
    if late_ns > 0:
        raise ShardError(
            f"shard {spec.worker} started {late_ns / 1e9:.2f}s after its clients were due (a worker was busy or "
            "restarted; raise load.dask_lead_s if the cluster is slow to start tasks)"
        )
    result = await run_worker(spec.worker, spec.indices, shifted(plan, offset), loop_name, clock_offset_ns=offset)
    after = None
    if plan.clock_sync and before is not None:
        after, _, later_problem = await measure_offset(plan.host, plan.port, context)
        problem = problem or later_problem
    result.clock = clock_record(before, after, problem) if plan.clock_sync else None
    result.host = host_record(executor, core, address)
    return result


def run_shard(spec: ShardSpec, plan: Plan, executor: str = "local", core: int | None = None) -> WorkerResult:
    """Run one shard to the end; a failure comes back in ``WorkerResult.failure``, never as an exception."""
    runner, loop_name = event_loop_runner(spec.use_uvloop)
    raise_nofile_limit()  # two descriptors per client connection: thousands need more than a soft 1024
    try:
        result: WorkerResult = runner(shard_main(spec, plan, loop_name, executor, core))
    except BaseException:
        result = WorkerResult(spec.worker, len(spec.indices), loop_name, failure=traceback.format_exc(limit=5))
        result.host = host_record(executor, core, None)
    return result


# --- on a Dask worker -------------------------------------------------------------------------------------

CORE_LOCK_DIR = Path(tempfile.gettempdir())


@contextlib.contextmanager
def pinned_core(lock_dir: Path = CORE_LOCK_DIR) -> Iterator[int]:
    """Pin this whole process (every thread) to a core no other pushbench shard on this host holds.

    A core is held by an exclusive ``flock`` on ``<tmp>/pushbench-core-<n>.lock`` for as long as the shard
    runs; the kernel drops it when the process dies, so a killed worker frees its core. The previous affinity
    of every thread is restored afterwards.
    """
    for core in sorted(os.sched_getaffinity(0)):
        fd = os.open(lock_dir / f"pushbench-core-{core}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        previous: dict[int, set[int]] = {}
        try:
            for tid in (int(t) for t in os.listdir("/proc/self/task")):
                with contextlib.suppress(OSError):  # a thread may end meanwhile
                    previous[tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, {core})
            yield core
        finally:
            for tid, cpus in previous.items():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, cpus)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise ShardError(
        f"no free core on {socket.gethostname()}: every core this worker may use already runs a pushbench shard "
        "(start at most one dask worker with resource shard=1 per core)"
    )


def dask_shard(spec: ShardSpec, plan: Plan) -> WorkerResult:
    """The Dask task of one shard (submitted with ``resources={"shard": 1}``): pinned, then ``run_shard``."""
    try:
        with pinned_core() as core:
            return run_shard(spec, plan, executor="dask", core=core)
    except ShardError as exc:
        result = WorkerResult(spec.worker, len(spec.indices), "none", failure=f"ShardError: {exc}")
        result.host = host_record("dask", None, None)
        return result


# --- in a local process -----------------------------------------------------------------------------------


def local_shard_process(spec: ShardSpec, pipe: Pipe) -> None:
    """Entry point of a local shard process (multiprocessing target): ``ready``, then a plan, then the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, also on Ctrl-C
    if spec.netns is not None:
        netns.enter(spec.netns)
    _, loop_name = event_loop_runner(spec.use_uvloop)
    pipe.send(("ready", loop_name))
    try:
        message = pipe.recv()
    except EOFError:
        return
    if message[0] != "plan":
        return
    result = run_shard(spec, message[1])
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.send(("result", result))
