"""Client shards on a real Dask cluster of network-namespace hosts (``make test-distributed``, marker ``distributed``).

The test makes four namespaces with ``pushbench.netns`` (``pbns-<pid>-<role>``, /30s from 10.213.13.0/24, removed
at the end): ``srv`` runs ``python -m servers``; ``ctl`` runs the Dask scheduler and the load generator (it routes
between the others, like the one switch of a small lab); ``w1`` and ``w2`` each run one ``dask worker --nthreads 1
--resources shard=1``. A 2-shard cell on the cluster must give the same messages, bytes (per connection, to the
byte) and latency counts as the same cell with two local worker processes; killing one Dask worker mid-cell must
fail that cell with one line and keep the next one.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loadgen.metrics import merge_histograms
from pushbench import netns
from tests.conftest import ROOT, timeout

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

POOL = "10.213.13.0/24"
SCHEDULER_PORT = 8786
SERVER_PORT = 8080
ROLES = ("srv", "w1", "w2")  # each wired to ctl by its own /30


@dataclass
class Cluster:
    ctl: str
    hosts: dict[str, str]  # role -> namespace
    addr: dict[str, str]  # role -> address (ctl's side of each link is the host's gateway)
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def scheduler(self) -> str:
        return f"tcp://{self.addr['ctl']}:{SCHEDULER_PORT}"

    @property
    def server_url(self) -> str:
        return f"http://{self.addr['srv']}:{SERVER_PORT}"

    def spawn(self, name: str, ns: str, argv: list[str], ready: str) -> None:
        """Start ``argv`` in ``ns``, its output in logs/<name>.log; wait until that log shows ``ready``."""
        self.stop(name)
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(netns.exec_args(ns, argv), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        deadline = time.monotonic() + timeout(30)
        while ready not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log_path.read_text(errors='replace')[-800:]}")
            time.sleep(0.05)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout(3))
        except subprocess.TimeoutExpired:  # a worker still trying to say goodbye to its scheduler
            proc.kill()
            proc.wait()

    def fresh_server(self) -> None:
        """A new server, its seq past 9 before a run starts: two runs then see events of the same size (two-digit
        seqs: a run ends long before seq 100 at 5 events/s), so their bytes can be compared to the byte."""
        self.spawn(
            "server",
            self.hosts["srv"],
            [
                sys.executable, "-m", "servers", "--set", f'server.host="{self.addr["srv"]}"',
                "--set", f"server.port={SERVER_PORT}", "--set", "feed.rate_hz=5", "--set", "feed.payload_bytes=50",
                "--set", "server.ws_heartbeat_s=0", "--set", "server.sse_heartbeat_s=0",
            ],
            "serving http://",
        )  # fmt: skip
        time.sleep(2.2)

    def start_worker(self, role: str) -> None:
        self.spawn(
            role,
            self.hosts[role],
            [
                sys.executable, "-m", "dask", "worker", self.scheduler, "--host", self.addr[role], "--nthreads", "1",
                "--resources", "shard=1", "--no-nanny", "--no-dashboard", "--name", role,
            ],
            "Registered to:",
        )  # fmt: skip

    def loadgen(
        self, tmp_path: Path, name: str, executor: str, transports: list[str], **load: Any
    ) -> subprocess.Popen[str]:
        keys = {"clients": 4, "workers": 2, "duration_s": 1.0, "warmup_s": 0.4, "ramp_up_s": 0.2, **load}
        config = tmp_path / f"{name}.toml"
        config.write_text(
            textwrap.dedent(f"""
            [feed]
            rate_hz = 5
            payload_bytes = 50
            [load]
            executor = "{executor}"
            dask_scheduler = "{self.scheduler}"
            dask_lead_s = 2.0
            {chr(10).join(f"{k} = {v!r}" for k, v in keys.items())}
            [target]
            url = "{self.server_url}"
            [matrix]
            transport = {json.dumps(transports)}
            """)
        )
        return subprocess.Popen(
            netns.exec_args(
                self.ctl, [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(tmp_path / name)]
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def established(self, role: str) -> int:
        """TCP connections from ``role``'s namespace to the server, as its kernel lists them."""
        done = netns.run(
            self.hosts[role], "ss", "-Htn", "state", "established", "dst", f"{self.addr['srv']}:{SERVER_PORT}"
        )
        return len(done.stdout.splitlines())


@dataclass
class Result:
    summary: pd.DataFrame
    connections: pd.DataFrame
    histograms: pd.DataFrame
    meta: dict[str, Any]

    def cell(self, cell_id: str) -> dict[str, Any]:
        return next(c for c in self.meta["cells"] if c["cell_id"] == cell_id)


def finish(proc: subprocess.Popen[str], out: Path) -> Result:
    stdout, stderr = proc.communicate(timeout=timeout(120))
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    folder = (out / "latest").resolve()
    return Result(
        pd.read_csv(folder / "summary.csv"),
        pd.read_parquet(folder / "connections.parquet"),
        pd.read_parquet(folder / "histograms.parquet"),
        json.loads((folder / "run.json").read_text()),
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problems = netns.missing_requirements()
    if problems:
        pytest.skip("; ".join(problems))
    netns.remove_stale()
    with netns.Namespaces() as spaces:
        ctl = spaces.add("ctl")
        netns.sysctl(ctl, "net.ipv4.ip_forward", "1")
        hosts, addr = {}, {}
        for i, role in enumerate(ROLES):
            ns = spaces.add(role)
            gateway, host = netns.subnet_30(POOL, i)
            netns.veth(ctl, f"pb-{role}", gateway, ns, "pb0", host)
            netns.route(ns, "default", gateway.split("/")[0])
            hosts[role], addr[role] = ns, host.split("/")[0]
        addr["ctl"] = netns.subnet_30(POOL, 0)[0].split("/")[0]  # the scheduler listens on ctl's first link
        c = Cluster(ctl, hosts, addr, tmp_path_factory.mktemp("cluster-logs"))
        try:
            c.spawn(
                "scheduler",
                ctl,
                [sys.executable, "-m", "dask", "scheduler", "--host", addr["ctl"], "--port", str(SCHEDULER_PORT),
                 "--no-dashboard"],
                "Scheduler at:",
            )  # fmt: skip
            for role in ("w1", "w2"):
                c.start_worker(role)
            yield c
        finally:
            for name in reversed(list(c.procs)):  # workers and server before the scheduler
                c.stop(name)


def per_connection(result: Result) -> pd.DataFrame:
    cols = ["worker", "client", "conn_seq", "bytes_down_tcp", "bytes_up_tcp", "bytes_down_payload", "bytes_up_payload"]
    return result.connections[cols].sort_values(["client", "conn_seq"]).reset_index(drop=True)


def test_two_dask_shards_measure_what_two_local_workers_measure(cluster: Cluster, tmp_path: Path) -> None:
    cluster.fresh_server()
    local = finish(cluster.loadgen(tmp_path, "local", "local", ["ws"]), tmp_path / "local")
    cluster.fresh_server()
    dask = finish(cluster.loadgen(tmp_path, "dask", "dask", ["ws"]), tmp_path / "dask")

    a, b = local.summary.iloc[0], dask.summary.iloc[0]
    assert a["status"] == b["status"] == "ok", (local.cell("c000-r1")["warnings"], dask.cell("c000-r1")["warnings"])
    for column in ("events_published", "messages_expected", "messages_received", "messages_lost",
                   "messages_duplicated", "bytes_down_tcp", "bytes_up_tcp", "bytes_down_payload", "bytes_up_payload"):  # fmt: skip
        assert a[column] == b[column], column
    assert a["messages_received"] == 4 * a["events_published"] > 0
    pd.testing.assert_frame_equal(per_connection(local), per_connection(dask))
    counts = [merge_histograms([r.histograms.iloc[0]["encoded"]]).get_total_count() for r in (local, dask)]
    assert counts[0] == counts[1] == a["messages_received"]

    # The shards ran on the two worker hosts, each pinned to a core of its own, and measured their clocks.
    workers = dask.cell("c000-r1")["workers"]
    assert sorted(w["host"]["address"] for w in workers) == sorted([cluster.addr["w1"], cluster.addr["w2"]])
    assert len({w["host"]["core"] for w in workers}) == 2
    assert dask.meta["executor"]["kind"] == "dask" and dask.summary.iloc[0]["load_hosts"] == 2
    for w in workers:
        clock = w["clock"]
        assert clock["before"]["exchanges"] == 8 and clock["after"] is not None
        assert abs(clock["applied_offset_ns"]) <= clock["before"]["uncertainty_ns"]  # one machine: one clock
        print(f"shard {w['worker']} on {w['host']['address']}: offset {clock['applied_offset_ns']} ns "
              f"± {clock['uncertainty_ns']} ns")  # fmt: skip


def test_a_dask_worker_killed_mid_cell_fails_that_cell_and_the_next_cell_runs(cluster: Cluster, tmp_path: Path) -> None:
    cluster.fresh_server()
    proc = cluster.loadgen(tmp_path, "kill", "dask", ["ws", "sse"], duration_s=2.0)
    deadline = time.monotonic() + timeout(30)
    while cluster.established("w2") < 2:  # w2's shard holds 2 of the 4 clients
        assert time.monotonic() < deadline and proc.poll() is None, "the first cell's clients never connected"
        time.sleep(0.05)
    time.sleep(0.8)  # past the ramp-up and warm-up: inside the window
    cluster.stop("w2", signal.SIGKILL)
    cluster.start_worker("w2")  # a replacement, so the next cell finds two workers again
    result = finish(proc, tmp_path / "kill")

    first, second = (result.summary.iloc[i] for i in (0, 1))
    assert first["status"] == "incomplete"
    died = [w for w in result.cell("c000-r1")["warnings"] if "died mid-cell" in w]
    # Either shard may have landed on w2: the line names the one that did, and its worker's address.
    assert len(died) == 1 and re.match(rf"dask shard [01] on tcp://{cluster.addr['w2']}:\d+: ", died[0]), died
    assert first["messages_lost"] >= 2 * first["events_published"]  # the dead shard's two clients got nothing counted
    assert second["status"] == "ok", result.cell("c001-r1")["warnings"]
    assert second["messages_received"] == second["messages_expected"] == 4 * second["events_published"] > 0
