"""``[target] url``: the load generator measures a server it did not start (pushbench's own, or one without /stats)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from analysis.report import load_generator_description, server_description
from loadgen.proxy import ProxyUnavailable, find_haproxy, start_proxy
from loadgen.tls import CertStore
from pushbench.config import default_config
from pushbench.stacks import STACKS
from servers.check import check_server
from tests.conftest import ROOT, ServerProcess, timeout
from tests.test_loadgen_e2e import run_loadgen

FAST = {"duration_s": 0.5, "warmup_s": 0.2, "ramp_up_s": 0.1, "clients": 3, "rate_hz": 20, "payload_bytes": 50}


@pytest.fixture
def loopback_dask(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler and two ``dask worker --nthreads 1 --resources shard=1`` on 127.0.0.1; the scheduler's address."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str], ready: str) -> str:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", *argv], stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout(30)
        while (text := log.read_text(errors="replace")).find(ready) < 0:
            assert procs[-1].poll() is None and time.monotonic() < deadline, text[-800:]
            time.sleep(0.05)
        return text[text.index(ready) :].split()[2]

    try:
        address = spawn(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], "Scheduler at:"
        )
        for i in (1, 2):
            worker = ["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--resources", "shard=1"]
            with (tmp_path / f"w{i}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "dask", *worker, "--no-nanny", "--no-dashboard"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + timeout(30)
        while sum("Registered to:" in (tmp_path / f"w{i}.log").read_text(errors="replace") for i in (1, 2)) < 2:
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "dask workers did not start"
            time.sleep(0.05)
        yield address
    finally:
        for proc in reversed(procs):  # the workers first, then their scheduler
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:  # a worker still trying to say goodbye to its scheduler
                proc.kill()
                proc.wait()


@pytest.fixture
def minimal_server() -> Iterator[str]:
    """tests/minimal_server.py (the contract and nothing more) at 20 events/s; its URL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "minimal_server.py"), "--rate", "20"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        assert line.startswith("serving http://"), line
        yield line.removeprefix("serving ")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_separately_started_pushbench_server_is_measured_through_its_stats_by_dask_shards(
    tmp_path: Path, server_process: Callable[..., ServerProcess], loopback_dask: str
) -> None:
    """Two shards on two Dask workers (loopback here; namespace hosts in test_distributed.py)."""
    server = server_process(
        "--set", "feed.rate_hz=20", "--set", "feed.payload_bytes=50",
        "--set", "server.ws_heartbeat_s=0", "--set", "server.sse_heartbeat_s=0",
    )  # fmt: skip
    tables = f'[target]\nurl = "{server.url}"\n'
    dask = ("--set", "load.executor=dask", "--set", f'load.dask_scheduler="{loopback_dask}"', "--set", "load.workers=2")
    run = run_loadgen(tmp_path, tables, args=("--set", "load.transport=sse", *dask), **FAST)  # type: ignore[arg-type]
    assert run.rc == 0, run.stderr
    assert run.meta["target"] == {"url": server.url, "external": True, "measured": True}
    assert server.proc.poll() is None  # the load generator neither started nor stopped it
    for transport in ("sse",):  # one cell is enough here; the transports are tested against the minimal server
        row = run.row(transport=transport)
        assert row["status"] == "ok", run.cell_meta(row["cell_id"])["warnings"]
        assert row["messages_received"] == row["messages_expected"] == 3 * row["events_published"] > 0
        assert bool(row["server_external"]) and bool(row["server_measured"])
        # The server's own count of events handed to this transport's sockets in the window, off by at most one
        # event per client at the window's edges.
        assert abs(row["server_deliveries"] - row["messages_expected"]) <= 3
        assert row["server_cpu_s"] >= 0 and row["server_rss_bytes"] > 0
        assert math.isnan(row["connections_peak"])  # an external server's peak spans earlier cells
        # Same machine, same clock: the estimated offset is within its uncertainty of zero, and that is small.
        cell = run.cell_meta(row["cell_id"])
        assert run.meta["executor"]["kind"] == "dask" and run.meta["executor"]["shard_slots"] == 2
        assert len({w["host"]["dask_worker"] for w in cell["workers"]}) == 2
        assert len({w["host"]["core"] for w in cell["workers"]}) == 2  # pinned: never one core for two shards
        for worker in cell["workers"]:
            clock = worker["clock"]
            assert abs(clock["applied_offset_ns"]) <= clock["before"]["uncertainty_ns"]
            assert 0 < clock["uncertainty_ns"] < 20_000_000
    assert "measured: its /stats holds pushbench's counters" in server_description(run.meta)
    assert load_generator_description(run.meta).startswith(
        f"Dask cluster {loopback_dask}, 2 shard slots; shards ran on "
    )


def test_a_server_without_stats_is_measured_from_the_client_side_only(tmp_path: Path, minimal_server: str) -> None:
    tables = f'[target]\nurl = "{minimal_server}"\n'
    run = run_loadgen(tmp_path, tables, args=("--set", "load.transport=poll"), **FAST)  # type: ignore[arg-type]
    assert run.rc == 0, run.stderr
    assert run.meta["target"] == {"url": minimal_server, "external": True, "measured": False}
    for transport in ("poll",):
        row = run.row(transport=transport)
        cell = run.cell_meta(row["cell_id"])
        assert row["status"] == "ok", cell["warnings"]
        assert row["messages_lost"] == 0 and row["messages_received"] == 3 * row["events_published"] > 0
        assert row["bytes_down_tcp"] > row["bytes_down_payload"] > 0
        for column in ("server_cpu_s", "server_rss_bytes", "server_deliveries", "late_ticks", "connections_peak"):
            assert math.isnan(row[column]), column
        assert not bool(row["server_measured"])
        assert any("clock offset to the server not measured" in w for w in cell["warnings"])
    assert server_description(run.meta).startswith("external, unmeasured")


def test_a_target_off_the_declared_schedule_fails_the_cell_and_says_why(tmp_path: Path, minimal_server: str) -> None:
    tables = f'[target]\nurl = "{minimal_server}"\n'
    run = run_loadgen(tmp_path, tables, **{**FAST, "rate_hz": 10})  # type: ignore[arg-type]
    assert run.rc == 0, run.stderr
    row = run.row(transport="ws")
    assert row["status"] == "failed"
    (warning,) = run.cell_meta(row["cell_id"])["warnings"]
    assert "50.000 ms apart where feed.rate_hz says 100.000 ms" in warning


@pytest.mark.stacks
def test_an_https_target_is_measured_over_tls_with_its_own_ca(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    """An https:// target (here pushbench's server behind HAProxy, started by the test, not the runner)."""
    try:
        find_haproxy()
    except ProxyUnavailable as exc:
        pytest.skip(str(exc))
    server = server_process(
        "--set", "feed.rate_hz=20", "--set", "feed.payload_bytes=50",
        "--set", "server.ws_heartbeat_s=0", "--set", "server.sse_heartbeat_s=0",
    )  # fmt: skip
    config = default_config(["load.stack=h1-tls"])
    certs = CertStore()
    files = certs.for_load(config.load)
    proxy = start_proxy(
        stack=STACKS["h1-tls"], server_pem=files.server_pem, ca_file=files.ca_pem, backend_host="127.0.0.1",
        backend_port=server.port, server=config.server, work_dir=tmp_path / "proxy",
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{proxy.port}"
        checks = asyncio.run(check_server(url, wait_s=timeout(5), ca_file=str(files.ca_pem)))
        assert [r for r in checks if not r.ok] == []
        tables = f'[target]\nurl = "{url}"\nca_file = "{files.ca_pem}"\n'
        run = run_loadgen(tmp_path, tables, args=("--set", "load.stack=h1-tls"), **FAST)  # type: ignore[arg-type]
    finally:
        proxy.stop()
        certs.close()
    assert run.rc == 0, run.stderr
    row = run.row(transport="ws")
    cell = run.cell_meta(row["cell_id"])
    assert row["status"] == "ok", cell["warnings"]
    assert row["messages_received"] == row["messages_expected"] == 3 * row["events_published"] > 0
    assert bool(row["server_measured"]) and row["bytes_down_tls"] > 0  # /stats through the proxy; TLS records
    assert all(w["clock"]["uncertainty_ns"] is not None for w in cell["workers"])  # GET /time over TLS


def test_dask_shards_see_every_worker_at_each_look_while_the_client_refreshes_its_cache(loopback_dask: str) -> None:
    """The client's periodic scheduler-info refresh (workers left out) must never make a live worker look gone.

    ``Client.scheduler_info()`` returns a cache that the client's own periodic refresh overwrites without the
    workers; read right after a refresh, both shards of a cell once looked dead mid-cell. A 1-ms refresh makes
    that interleaving likely here: every look must still list both workers.
    """
    import dask

    from loadgen.executors import DaskExecutor, live_workers, shard_slots

    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}):
        executor = DaskExecutor(loopback_dask, lead_s=1.0)
    try:
        looks = [len(shard_slots(live_workers(executor.client))) for _ in range(300)]
        assert looks == [2] * 300, f"{looks.count(2)} of 300 looks saw both workers"
    finally:
        executor.close()
