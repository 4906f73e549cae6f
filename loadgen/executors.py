"""Where a cell's shards run: local processes (``load.executor = "local"``) or a Dask cluster (``"dask"``).

Both give the runner the same four steps per cell: ``start`` the shards (before the server, so they import
meanwhile), ``submit`` the plan, ``check_running`` at window start, ``collect`` one ``ShardOutcome`` per shard.
Whatever ran them, the results are merged by ``loadgen.results`` the same way: there is one merge path.

On Dask, one task per shard is submitted with ``resources={"shard": 1}``: each ``dask worker`` started with
``--nthreads 1 --resources shard=1`` runs at most one shard at a time, and the shard pins its process to a core
of its own (``loadgen.shard.pinned_core``). A worker that dies mid-cell loses its shard: the cell is marked
incomplete with one line saying which, as when a local worker process dies, and the next cells run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Protocol

from loadgen.client import Plan
from loadgen.shard import ShardSpec, dask_shard, local_shard_process
from loadgen.worker import WorkerResult
from pushbench.config import LoadConfig

WORKER_READY_TIMEOUT_S = 30.0
SETUP_LEAD_S = 0.3  # local: between sending the plan and the first client connecting
RESULT_GRACE_S = 15.0  # after the plan's stop time, how long a shard's result may take to come back
DASK_CONNECT_TIMEOUT_S = 10.0
DASK_WORKERS_TIMEOUT_S = 30.0  # how long a cell waits for enough workers with resource shard=1
SHARD_RESOURCE = "shard"

Tick = Callable[[], None]


class ShardsFailed(Exception):
    """The shards could not be started at all (the cell fails)."""


@dataclass
class ShardOutcome:
    name: str  # "loadgen-worker-0", "dask shard 1 on tcp://10.0.0.2:40000"
    result: WorkerResult | None
    problem: str | None  # why there is no result, one line


class Shards(Protocol):
    """One cell's shards, from start to results."""

    lead_s: float  # from submitting the plan to the first client connecting

    def start(self, specs: list[ShardSpec]) -> None: ...

    def ready(self) -> set[str]: ...

    def submit(self, plan: Plan) -> None: ...

    def check_running(self) -> str | None: ...

    def collect(self, stop_ns: int, tick: Tick) -> list[ShardOutcome]: ...

    def close(self) -> None: ...


class Executor(Protocol):
    name: str

    def shards(self, cell_id: str) -> Shards: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


# --- local processes --------------------------------------------------------------------------------------


class LocalShards:
    """``load.workers`` spawned processes on this machine, talking over pipes."""

    lead_s = SETUP_LEAD_S

    def __init__(self) -> None:
        self.procs: list[tuple[Any, Pipe]] = []

    def start(self, specs: list[ShardSpec]) -> None:
        ctx = mp.get_context("spawn")
        for spec in specs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=local_shard_process, args=(spec, child_end), name=f"loadgen-worker-{spec.worker}")
            proc.daemon = True
            proc.start()
            child_end.close()
            self.procs.append((proc, parent_end))

    def ready(self) -> set[str]:
        loops = set()
        for proc, pipe in self.procs:
            try:
                if not pipe.poll(WORKER_READY_TIMEOUT_S):
                    raise ShardsFailed(f"{proc.name} did not start within {WORKER_READY_TIMEOUT_S}s")
                loops.add(pipe.recv()[1])
            except (EOFError, OSError):
                raise ShardsFailed(f"{proc.name} exited while starting (exit code {proc.exitcode})") from None
        return loops

    def submit(self, plan: Plan) -> None:
        for _, pipe in self.procs:
            pipe.send(("plan", plan))

    def check_running(self) -> str | None:
        dead = [proc.name for proc, _ in self.procs if not proc.is_alive()]
        return f"{', '.join(dead)} exited before the window" if dead else None

    def collect(self, stop_ns: int, tick: Tick) -> list[ShardOutcome]:
        deadline = time.monotonic() + max(0.0, (stop_ns - time.time_ns()) / 1e9) + RESULT_GRACE_S
        outcomes = []
        for proc, pipe in self.procs:
            result = None
            while time.monotonic() < deadline and result is None:
                tick()
                if pipe.poll(0.1):
                    try:
                        kind, payload = pipe.recv()
                    except EOFError:
                        break
                    result = payload if kind == "result" else None
                elif not proc.is_alive():
                    break
            problem = None if result is not None else f"{proc.name} returned no result (exit code {proc.exitcode})"
            outcomes.append(ShardOutcome(proc.name, result, problem))
        return outcomes

    def close(self) -> None:
        for proc, pipe in self.procs:
            with contextlib.suppress(OSError):
                pipe.close()
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()


class LocalExecutor:
    name = "local"

    def shards(self, cell_id: str) -> Shards:
        return LocalShards()

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "local"}


# --- a Dask cluster ---------------------------------------------------------------------------------------


def live_workers(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's workers now, asked for each time.

    Not ``client.scheduler_info()``: that returns a cache which the client's own periodic refresh overwrites with
    no workers, so a look taken just after a refresh sees a live cluster as empty (and every shard as dead).
    """
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])


def shard_slots(workers: dict[str, dict[str, Any]]) -> list[str]:
    """Addresses of the workers that can run a shard (resource ``shard`` >= 1), from ``live_workers()``."""
    return sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(SHARD_RESOURCE, 0) >= 1)


class DaskShards:
    """One task per shard on the cluster; the worker running each is noted so its death is seen at once."""

    def __init__(self, client: Any, scheduler: str, cell_id: str, lead_s: float) -> None:
        self.client = client
        self.scheduler = scheduler
        self.cell_id = cell_id
        self.lead_s = lead_s
        self.specs: list[ShardSpec] = []
        self.futures: list[Any] = []
        self.running_on: dict[str, str] = {}  # task key -> worker address

    def start(self, specs: list[ShardSpec]) -> None:
        self.specs = specs
        deadline = time.monotonic() + DASK_WORKERS_TIMEOUT_S
        while len(slots := shard_slots(live_workers(self.client))) < len(specs):
            if time.monotonic() > deadline:
                raise ShardsFailed(
                    f"dask cluster {self.scheduler} has {len(slots)} workers with resource {SHARD_RESOURCE}=1, the cell "
                    f"needs {len(specs)} (load.workers): start `dask worker {self.scheduler} --nthreads 1 "
                    f"--resources {SHARD_RESOURCE}=1` once per core on the load hosts"
                )
            time.sleep(0.2)

    def ready(self) -> set[str]:
        return set()  # Dask workers are up already; their loop is reported with each result

    def submit(self, plan: Plan) -> None:
        stamp = f"{os.getpid()}-{time.time_ns()}"
        self.futures = [
            self.client.submit(
                dask_shard,
                spec,
                plan,
                key=f"pushbench-{self.cell_id}-shard{spec.worker}-{stamp}",
                resources={SHARD_RESOURCE: 1},
                pure=False,
                retries=0,
            )
            for spec in self.specs
        ]

    def check_running(self) -> str | None:
        """At window start every shard must be running on a worker of its own; note which."""
        processing = self.client.processing()
        where = {key: addr for addr, keys in processing.items() for key in keys}
        missing = []
        for spec, future in zip(self.specs, self.futures, strict=True):
            if future.key in where:
                self.running_on[future.key] = where[future.key]
            elif future.status != "finished":
                missing.append(str(spec.worker))
        if missing:
            return (
                f"dask shard {', '.join(missing)} was not running when the window began (workers busy or too few with "
                f"resource {SHARD_RESOURCE}=1): its clients' messages count as lost"
            )
        return None

    def collect(self, stop_ns: int, tick: Tick) -> list[ShardOutcome]:
        deadline = time.monotonic() + max(0.0, (stop_ns - time.time_ns()) / 1e9) + RESULT_GRACE_S
        outcomes: dict[int, ShardOutcome] = {}
        while len(outcomes) < len(self.futures):
            tick()
            alive = set(live_workers(self.client))
            for i, (spec, future) in enumerate(zip(self.specs, self.futures, strict=True)):
                if i in outcomes:
                    continue
                name = f"dask shard {spec.worker}" + (
                    f" on {self.running_on[future.key]}" if future.key in self.running_on else ""
                )
                # A worker that left the cluster first: its task may have been re-run elsewhere since (and refused
                # there, its schedule being past), which is not this shard's result.
                if future.key in self.running_on and self.running_on[future.key] not in alive:
                    future.cancel()
                    outcomes[i] = ShardOutcome(name, None, f"{name}: the dask worker died mid-cell, no result")
                elif future.status == "finished":
                    outcomes[i] = ShardOutcome(name, future.result(), None)
                elif future.status in ("error", "cancelled"):
                    outcomes[i] = ShardOutcome(name, None, f"{name} failed: {_one_line(future)}")
                elif time.monotonic() > deadline:
                    future.cancel()
                    outcomes[i] = ShardOutcome(name, None, f"{name} returned no result within {RESULT_GRACE_S}s")
            if len(outcomes) < len(self.futures):
                time.sleep(0.1)
        return [outcomes[i] for i in range(len(self.futures))]

    def close(self) -> None:
        pending = [f for f in self.futures if f.status not in ("finished", "error", "cancelled")]
        if pending:
            with contextlib.suppress(Exception):
                self.client.cancel(pending)
        for future in self.futures:
            future.release()


def _one_line(future: Any) -> str:
    try:
        exc = future.exception(timeout=1)
    except Exception as e:  # the scheduler may be gone too
        return f"{type(e).__name__}: {e}"
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[-1] if text else "unknown error"


class ExecutorUnavailable(Exception):
    """The executor the config names cannot be used (no scheduler at that address); one line, naming the key."""


def make_executor(load: LoadConfig) -> Executor:
    """The run's executor from ``[load]``: local processes, or a client of ``load.dask_scheduler``."""
    if load.executor == "local":
        return LocalExecutor()
    try:
        return DaskExecutor(load.dask_scheduler, load.dask_lead_s)
    except ImportError:
        raise ExecutorUnavailable(
            "load.executor: 'dask' needs the distributed package (pip install -e '.[dask]')"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ExecutorUnavailable(
            f"load.dask_scheduler: cannot reach a Dask scheduler at {load.dask_scheduler}: {exc}".splitlines()[0]
        ) from None


class DaskExecutor:
    """A ``distributed.Client`` to ``load.dask_scheduler``, kept for the whole run."""

    name = "dask"

    def __init__(self, scheduler: str, lead_s: float) -> None:
        from distributed import Client

        self.scheduler = scheduler
        self.lead_s = lead_s
        self.client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
        # Import the shard code on every worker now, so no cell's first task pays for it.
        try:
            self.client.run(_preimport)
        except Exception as exc:
            self.close()
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ExecutorUnavailable(
                f"load.dask_scheduler: a worker of {scheduler} cannot run pushbench's shards ({first}): install this "
                "pushbench commit (pip install -e '.[dask]') on every load host"
            ) from None

    def shards(self, cell_id: str) -> Shards:
        return DaskShards(self.client, self.scheduler, cell_id, self.lead_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)

    def describe(self) -> dict[str, Any]:
        workers = live_workers(self.client)
        return {
            "kind": "dask",
            "scheduler": self.scheduler,
            "workers": {a: {"host": w.get("host"), "nthreads": w.get("nthreads")} for a, w in workers.items()},
            "shard_slots": len(shard_slots(workers)),
        }


def _preimport() -> bool:
    import loadgen.shard  # noqa: F401

    return True
