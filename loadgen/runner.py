"""Run one cell: a fresh server process, the worker processes, the window, and everything they measured.

Order: start ``python -m servers`` with the cell's [feed]/[server] values, wait until it answers, read one
published event to learn the feed's tick phase, start the workers, give them an absolute timeline (ramp-up,
warm-up, window aligned half a tick between publications, drain), read the server's /stats at window start
and end, then stop workers and server: always, also on errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from loadgen.client import Plan
from loadgen.clock import ClockOffset
from loadgen.executors import SETUP_LEAD_S, Executor, LocalExecutor, ShardOutcome, ShardsFailed
from loadgen.headers import HeaderProfile
from loadgen.metrics import align_window, period_ns, schedule_problem, window_seq_range
from loadgen.netpath import (
    EmulatedPath,
    PathCounters,
    PathError,
    measure_path,
    path_counters,
    path_warning,
    path_window,
)
from loadgen.procs import log_tail, stop_process
from loadgen.proxy import ProxyProcess, ProxyUnavailable, start_proxy
from loadgen.shard import ShardSpec, measure_offset
from loadgen.sources import SourcePlan, new_connections_per_s, plan_sources, read_port_range
from loadgen.tls import CertificateError, CertStore, client_context
from loadgen.worker import WorkerResult, assign_clients
from pushbench import netns
from pushbench.config import Cell, FeedConfig, LoadConfig
from pushbench.contract import stats_problems
from pushbench.stacks import H1_TLS, STACKS
from pushbench.transports import TRANSPORTS
from pushbench.units import NS_PER_S

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 20.0
DRAIN_S = 1.0  # after the window: events published at its end still arrive
TCP_STATE_TIME_WAIT = "06"

Tick = Callable[[], None]


class CellFailed(Exception):
    """The cell could not be run at all (the server did not start, workers did not come up)."""


def toml_value(value: Any) -> str:
    """A Python config value as a TOML value for ``--set section.key=VALUE``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot express {value!r} in TOML")


def server_args(cell: Cell) -> list[str]:
    """``--set`` arguments that give a server exactly the cell's [feed] and [server] sections."""
    args = []
    sections = cell.sections_dict()
    for section in ("feed", "server"):
        for key, value in sections[section].items():
            args += ["--set", f"{section}.{key}={toml_value(value)}"]
    return args


def _proc_net_endpoint(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp, IPv4 little-endian) → ("127.0.0.1", 8080); IPv6 likewise."""
    addr_hex, port_hex = field.split(":")
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        addr = str(ipaddress.IPv4Address(raw[::-1]))
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        v6 = ipaddress.IPv6Address(words)
        addr = str(v6.ipv4_mapped) if v6.ipv4_mapped else str(v6)
    return addr, int(port_hex, 16)


def count_time_wait(proc_net_tcp_lines: list[str], host: str, port: int) -> int:
    """Sockets in TIME_WAIT with ``host:port`` at either end, from /proc/net/tcp{,6} lines."""
    target = (str(ipaddress.ip_address(host)), port)
    count = 0
    for line in proc_net_tcp_lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_STATE_TIME_WAIT:
            continue
        try:
            ends = (_proc_net_endpoint(fields[1]), _proc_net_endpoint(fields[2]))
        except ValueError:
            continue
        if target in ends:
            count += 1
    return count


def time_wait_sockets(host: str, port: int, pid: int | str = "self") -> int:
    """TIME_WAIT sockets at ``host:port`` in the network namespace of process ``pid`` (the server's)."""
    lines: list[str] = []
    for name in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        with contextlib.suppress(OSError):
            lines += Path(name).read_text().splitlines()[1:]
    return count_time_wait(lines, host, port)


class ServerProbe:
    """The load generator's view of a server: its address and its /stats, read on one kept-alive connection."""

    external = False

    def __init__(self, host: str, port: int, ns: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.netns = ns  # the server's network namespace on an emulated path; the probes connect from inside it
        self.ssl_context = ssl_context  # an https target's
        self._http: http.client.HTTPConnection | None = None
        self.probe_connections = 0  # TCP connections the load generator's own probes opened (the server counts them)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def alive(self) -> bool:
        return True

    def get_json(self, path: str, timeout_s: float = 2.0) -> Any:
        """GET on one kept-alive connection: the load generator's own probes add one connection, not one each
        (and no TIME_WAIT sockets of their own)."""
        for attempt in (1, 2):
            if self._http is None:
                self._http = (
                    http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s, context=self.ssl_context)
                    if self.ssl_context is not None
                    else http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
                )
            if self._http.sock is None:  # http.client reconnects by itself after "Connection: close"
                if self.netns is None:
                    self._http.connect()
                else:  # from inside the server's namespace: over its loopback, not the emulated path
                    sock = netns.socket_in(self.netns)
                    sock.settimeout(timeout_s)
                    try:
                        sock.connect((self.host, self.port))
                    except OSError:
                        sock.close()
                        raise
                    self._http.sock = sock
                self.probe_connections += 1
            try:
                self._http.request("GET", path)
                response = self._http.getresponse()
                body = response.read()
                if response.status != 200:
                    raise ValueError(f"{response.status} for {path}")
                return json.loads(body)
            except (OSError, http.client.HTTPException):
                self.close_probe()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close_probe(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def stats(self) -> dict[str, Any] | None:
        """/stats when it holds pushbench's counters (docs/contract.md), else None."""
        try:
            data = self.get_json("/stats")
        except (OSError, ValueError, http.client.HTTPException):
            return None
        if stats_problems(data):
            return None
        data["probe_connections"] = self.probe_connections
        return data

    def log_tail(self, lines: int = 5) -> str:
        return ""

    def stop(self) -> int | None:
        self.close_probe()
        return None


class ExternalServer(ServerProbe):
    """``[target] url``: a server somebody else started; the load generator never stops or signals it."""

    external = True


class ServerProcess(ServerProbe):
    """``python -m servers`` started by the load generator for one cell."""

    def __init__(
        self, proc: subprocess.Popen[bytes], host: str, port: int, log_path: Path, ns: str | None = None
    ) -> None:
        super().__init__(host, port, ns)
        self.proc = proc
        self.log_path = log_path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; the exit status."""
        self.close_probe()
        status = stop_process(self.proc, 10)
        if self.proc.stdout:
            self.proc.stdout.close()
        return status


def external_server(url: str, ca_file: str = "") -> ExternalServer:
    """The ``[target] url`` server (already validated as http(s)://HOST:PORT); https trusts ``ca_file`` (or the
    system's CAs), and speaks HTTP/1.1 for the load generator's own probes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    context = client_context(H1_TLS, ca_file, ("http/1.1",)) if parts.scheme == "https" else None
    return ExternalServer(parts.hostname, parts.port, ssl_context=context)


def start_server(cell: Cell, log_dir: Path, path: EmulatedPath | None = None) -> ServerProcess:
    """``python -m servers`` with the cell's values; waits for ``serving http://HOST:PORT`` and for /stats.

    On an emulated ``path`` it runs in the server namespace, bound to that namespace's address.
    """
    log_path = log_dir / f"server-{os.getpid()}-{cell.index}.log"
    log = log_path.open("wb")
    argv = [sys.executable, "-m", "servers", *server_args(cell)]
    if path is not None:
        argv = netns.exec_args(path.server_ns, [*argv, "--set", f"server.host={toml_value(path.server_ip)}"])
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,  # Ctrl-C reaches the load generator, which stops the server itself
    )
    log.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], SERVER_START_TIMEOUT_S)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    if not line.startswith("serving http://"):
        proc.kill()
        proc.wait()
        err = log_path.read_text(errors="replace").strip()[-500:]
        raise CellFailed(f"server did not start (first line {line!r}): {err}")
    hostport = line.removeprefix("serving http://")
    host, port = hostport.rsplit(":", 1)
    server = ServerProcess(proc, host.strip("[]"), int(port), log_path, path.server_ns if path else None)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while server.stats() is None:
        if time.monotonic() > deadline or not server.alive():
            server.stop()
            raise CellFailed(f"server at {server.url} does not answer /stats: {server.log_tail()}")
        time.sleep(0.05)
    return server


def reference_event(server: ServerProbe, tick_ns: int, burst: int) -> tuple[int, int]:
    """(seq, ts) of one published event: fixes the phase of the feed's tick schedule.

    For a server started elsewhere the events seen on the way must follow the schedule the config declares
    (``loadgen.metrics.schedule_problem``): the window's seq range is computed from it.
    """
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            latest = int(server.get_json("/poll")["cursor"])
            if latest >= 1:
                back = 3 * burst if server.external else 1
                events = server.get_json(f"/poll?after={max(0, latest - back)}")["events"]
                if events:
                    problem = schedule_problem([int(e["ts"]) for e in events], tick_ns, burst)
                    if server.external and problem:
                        raise CellFailed(f"target {server.url}: {problem}")
                    return int(events[-1]["seq"]), int(events[-1]["ts"])
            time.sleep(0.02)
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
        raise CellFailed(f"could not read an event from {server.url}/poll: {exc}") from None
    raise CellFailed("the server published no event")


def server_clock_offset(server: ServerProbe) -> ClockOffset | None:
    """This machine's clock offset to a server started elsewhere (GET /time), to plan in the server's time."""
    offset, _, _ = asyncio.run(measure_offset(server.host, server.port, server.ssl_context))
    return offset


def drain_s(load: LoadConfig) -> float:
    """How long clients keep receiving after the window so events published at its end still arrive."""
    if load.scenario == "feed" and TRANSPORTS[load.transport].polls:
        return DRAIN_S + load.poll_interval_s
    if load.scenario == "echo":
        return DRAIN_S + min(load.send_interval_s, 5.0)
    return DRAIN_S


def cell_seconds(cell: Cell) -> float:
    """Rough wall time of one cell, for the progress bar's ETA."""
    load = cell.load
    return 1.5 + SETUP_LEAD_S + load.ramp_up_s + load.warmup_s + load.duration_s + drain_s(load)


@dataclass
class CellRun:
    """Everything one run of a cell produced, before it is written."""

    cell: Cell
    repeat: int
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)
    results: list[WorkerResult] = field(default_factory=list)
    plan: Plan | None = None
    stats_start: dict[str, Any] | None = None
    stats_end: dict[str, Any] | None = None
    time_wait_end: int | None = None
    server_port: int | None = None
    server_exit: int | None = None
    proxy_usage_start: tuple[float, int] | None = None  # (CPU s, RSS bytes) of the TLS proxy, when there is one
    proxy_usage_end: tuple[float, int] | None = None
    network: dict[str, Any] = field(default_factory=dict)  # the emulated path: what was built and measured
    external: bool = False  # the server is [target] url's, not one the load generator started
    runner_clock: dict[str, Any] | None = None  # this machine's clock offset to the server, when estimated
    sources: dict[str, Any] | None = None  # loadgen.sources.SourcePlan (local executor only)
    memory_available_end: tuple[int, int] | None = None  # (available, total) bytes of this host at window end

    def fail(self, message: str, status: str = "incomplete") -> None:
        if self.status != "failed":
            self.status = status
        self.warnings.append(message)


def _wait_until(wall_ns: int, tick: Tick, server: ServerProbe | None = None) -> bool:
    """Sleep until ``wall_ns``, ticking the progress bar; False as soon as the server has died."""
    while True:
        if server is not None and not server.alive():
            return False
        remaining = (wall_ns - time.time_ns()) / NS_PER_S
        if remaining <= 0:
            return True
        tick()
        time.sleep(min(0.1, remaining))


def fault_schedule(load: LoadConfig, start: int) -> list[tuple[int, signal.Signals, str, float]]:
    """(when in ns, signal, config key, seconds into the window) of each fault the cell asks for, in order."""
    wanted = (
        ("fault_drop_at_s", load.fault_drop_at_s, signal.SIGUSR1),
        ("fault_kill_at_s", load.fault_kill_at_s, signal.SIGKILL),
    )
    return sorted((start + int(at_s * NS_PER_S), sig, key, at_s) for key, at_s, sig in wanted if at_s > 0)


def inject_faults(server: ServerProcess, load: LoadConfig, start: int, end: int, tick: Tick, run: CellRun) -> None:
    """``load.fault_drop_at_s`` / ``fault_kill_at_s``: SIGUSR1 (cut every connection) or SIGKILL the server."""
    for at_ns, sig, key, at_s in fault_schedule(load, start):
        if at_ns >= end or not _wait_until(at_ns, tick, server):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, sig)
        run.warnings.append(f"{key}: sent {sig.name} to the server {at_s}s into the window")


@dataclass(frozen=True)
class Timeline:
    """A cell's schedule in wall-clock ns (the server's clock): clients ramp up from ``anchor``, the window is
    [start, end), the clients stop at ``stop``; feed events ``seq_first..seq_last`` are due inside the window."""

    anchor_ns: int
    window_start_ns: int
    window_end_ns: int
    stop_ns: int
    seq_first: int
    seq_last: int


def plan_timeline(
    ref_seq: int, ref_ts_ns: int, feed: FeedConfig, load: LoadConfig, now_ns: int, lead_s: float = SETUP_LEAD_S
) -> Timeline:
    """The timeline from one published event (its seq and intended time fix the feed's tick phase), now, and the
    lead from submitting the plan to the first client connecting."""
    tick_ns = period_ns(feed.rate_hz)
    anchor = now_ns + int(lead_s * NS_PER_S)
    not_before = anchor + int((load.ramp_up_s + load.warmup_s) * NS_PER_S)
    start, end = align_window(ref_ts_ns, tick_ns, not_before, int(load.duration_s * NS_PER_S))
    seq_first, seq_last = window_seq_range(ref_seq, ref_ts_ns, tick_ns, feed.burst, start, end)
    return Timeline(anchor, start, end, end + int(drain_s(load) * NS_PER_S), seq_first, seq_last)


def make_plan(
    cell: Cell,
    repeat: int,
    profile: HeaderProfile,
    timeline: Timeline,
    host: str,
    port: int,
    ca_file: str = "",
    clock_sync: bool = False,
    source_addresses: tuple[str, ...] = (),
) -> Plan:
    """The plan every shard gets: where to connect (and from where), what its clients do, and the timeline."""
    load, feed = cell.load, cell.feed
    return Plan(
        host=host,
        port=port,
        transport=load.transport,
        scenario=load.scenario,
        clients=load.clients,
        poll_interval_s=load.poll_interval_s,
        send_interval_s=load.send_interval_s,
        longpoll_timeout_s=cell.server.longpoll_timeout_s,
        payload_bytes=feed.payload_bytes,
        seed=load.seed + 1000 * (repeat - 1),
        ws_compress=cell.server.ws_compress,
        ramp_up_s=load.ramp_up_s,
        profile=profile,
        anchor_ns=timeline.anchor_ns,
        window_start_ns=timeline.window_start_ns,
        window_end_ns=timeline.window_end_ns,
        stop_ns=timeline.stop_ns,
        seq_first=timeline.seq_first,
        seq_last=timeline.seq_last,
        stack=load.stack,
        ca_file=ca_file,
        clock_sync=clock_sync,
        source_addresses=source_addresses,
        cyclic_gc=load.cyclic_gc,
    )


def cell_sources(cell: Cell, host: str, port_range: tuple[int, int]) -> SourcePlan:
    """How many source addresses the cell's clients need to reach ``host`` (``loadgen.sources``)."""
    load, transport = cell.load, TRANSPORTS[cell.load.transport]
    churn = new_connections_per_s(
        load.clients,
        cell.server.keepalive,
        transport.polls or (load.scenario == "echo" and transport.echo_key == "http"),
        transport.holds_requests and load.scenario == "feed",
        cell.feed.rate_hz,
        load.send_interval_s if load.scenario == "echo" else load.poll_interval_s,
    )
    return plan_sources(load.clients, churn, host, port_range)


def start_tls_proxy(
    cell: Cell, certs: CertStore, server: ServerProbe, log_dir: Path, path: EmulatedPath | None = None
) -> tuple[ProxyProcess, str]:
    """HAProxy with the run's certificates in front of ``server``; the proxy and the CA file clients trust.
    On an emulated ``path`` it runs in the server's namespace, beside the server, and the certificate names
    that namespace's address."""
    try:
        files = certs.for_load(cell.load, (path.server_ip,) if path else ())
        proxy = start_proxy(
            stack=STACKS[cell.load.stack],
            server_pem=files.server_pem,
            ca_file=files.ca_pem,
            backend_host=server.host,
            backend_port=server.port,
            server=cell.server,
            work_dir=log_dir,
            host=server.host if path else "127.0.0.1",  # on a path: beside the server, in its namespace
            ns=path.server_ns if path else None,
        )
    except (ProxyUnavailable, CertificateError) as exc:
        raise CellFailed(str(exc)) from None
    return proxy, str(files.ca_pem)


def record_outcomes(run: CellRun, outcomes: Iterable[ShardOutcome]) -> None:
    """Each shard's result into ``run``; one that returned none or failed makes the cell incomplete, none at all
    failed."""
    for outcome in outcomes:
        if outcome.result is None:
            run.fail(outcome.problem or f"{outcome.name} returned no result")
            continue
        if outcome.result.failure:
            run.fail(f"{outcome.name} failed: {outcome.result.failure.strip().splitlines()[-1]}")
        run.results.append(outcome.result)
    if not run.results:
        run.status = "failed"


def run_cell(
    cell: Cell,
    repeat: int,
    profile: HeaderProfile,
    log_dir: Path,
    tick: Tick,
    certs: CertStore | None = None,
    executor: Executor | None = None,
) -> CellRun:
    """Run one cell once; see the module docstring. Never raises for a failure of the cell itself.

    A TLS stack puts HAProxy, with the run's certificates (``certs``, made here when not given), between the
    clients and the server; it starts after the server and stops before it. The shards run where ``executor``
    says (local processes by default); ``[target] url`` replaces the server the cell would start.
    """
    run = CellRun(cell, repeat)
    proxy: ProxyProcess | None = None
    stack = STACKS[cell.load.stack]
    own_certs = certs is None and stack.tls and not cell.target.url
    if own_certs:
        certs = CertStore()
    load, feed = cell.load, cell.feed
    executor = executor or LocalExecutor()
    server: ServerProbe | None = None
    emulated: EmulatedPath | None = None
    shards = executor.shards(f"c{cell.index:03d}-r{repeat}")
    try:
        if cell.network.emulated:
            try:
                emulated = EmulatedPath(cell.network, seed=load.seed + 1000 * (repeat - 1))
            except (PathError, netns.NetnsError) as exc:
                raise CellFailed(f"could not build the emulated network path: {exc}") from None
            run.network = emulated.describe()
        client_ns = emulated.client_ns if emulated else None
        specs = [
            ShardSpec(w, indices, load.uvloop, client_ns)
            for w, indices in enumerate(assign_clients(load.clients, load.workers))
        ]
        shards.start(specs)  # first: local workers import while the server starts
        if cell.target.url:
            try:
                server = external_server(cell.target.url, cell.target.ca_file)
            except CertificateError as exc:
                raise CellFailed(f"target.ca_file: {exc}") from None
        else:
            server = start_server(cell, log_dir, emulated)
        run.server_port = server.port
        run.external = server.external
        host, port, ca_file = server.host, server.port, cell.target.ca_file if server.external else ""
        if stack.tls and not server.external:
            assert certs is not None
            proxy, ca_file = start_tls_proxy(cell, certs, server, log_dir, emulated)
            host, port = proxy.host, proxy.port
        if emulated is not None:
            probe = measure_path(emulated).summary(cell.network.rtt_ms)
            run.network.update(probe)
            warning = path_warning(cell.network.rtt_ms, probe["path_rtt_ms_p50"])
            if warning:
                run.warnings.append(warning)
        loops = shards.ready()
        ref_seq, ref_ts = reference_event(server, period_ns(feed.rate_hz), feed.burst)
        # Shards on other hosts, or a server on one, may not share this clock: they estimate their offsets, and
        # the plan is written in the server's time (this machine's clock plus its own offset).
        clock_sync = server.external or executor.name != "local"
        own_offset = server_clock_offset(server) if clock_sync else None
        own = own_offset.offset_ns if own_offset else 0
        timeline = plan_timeline(ref_seq, ref_ts, feed, load, time.time_ns() + own, shards.lead_s)
        sources = cell_sources(cell, host, read_port_range()) if executor.name == "local" else None
        run.sources = sources.to_json() if sources else None
        addresses = sources.addresses if sources else ()
        plan = make_plan(cell, repeat, profile, timeline, host, port, ca_file, clock_sync, addresses)
        run.plan = plan
        run.runner_clock = own_offset.to_json() if own_offset else None
        shards.submit(plan)
        path_start: PathCounters | None = None
        if _wait_until(timeline.window_start_ns - own, tick, server):
            run.stats_start = server.stats()
            run.proxy_usage_start = proxy.usage() if proxy is not None else None
            if emulated is not None:
                path_start = path_counters(emulated)
            problem = shards.check_running()
            if problem:
                run.fail(problem)
        if isinstance(server, ServerProcess):
            inject_faults(server, load, timeline.window_start_ns, timeline.window_end_ns, tick, run)
        if _wait_until(timeline.window_end_ns - own, tick, server):
            run.stats_end = server.stats()
            run.proxy_usage_end = proxy.usage() if proxy is not None else None
            if executor.name == "local":  # TIME_WAIT sockets live on the load hosts: only this one is read
                # (in the server's network namespace when the load generator started the server)
                run.time_wait_end = time_wait_sockets(
                    host, port, server.proc.pid if isinstance(server, ServerProcess) else "self"
                )
                memory = psutil.virtual_memory()
                run.memory_available_end = (memory.available, memory.total)
            if emulated is not None and path_start is not None:
                run.network.update(path_window(path_start, path_counters(emulated)))
        if proxy is not None and not proxy.alive():
            run.fail(f"the TLS proxy exited with status {proxy.proc.returncode} during the cell: {proxy.log_tail()}")
        if isinstance(server, ServerProcess) and not server.alive():
            run.fail(f"server exited with status {server.proc.returncode} during the cell: {server.log_tail()}")
        elif (run.stats_start is None or run.stats_end is None) and not (server.external and run.stats_start is None):
            run.fail("could not read the server's /stats at window start or end")
        record_outcomes(run, shards.collect(timeline.stop_ns - own, tick))
        loops |= {r.loop for r in run.results}
        if "asyncio" in loops and load.uvloop:
            run.warnings.append("uvloop is not installed: workers ran on the default asyncio loop")
    except (CellFailed, ShardsFailed) as exc:
        run.fail(str(exc), status="failed")
    except Exception as exc:  # one broken cell must not lose the others' results
        run.fail(f"load generator error: {type(exc).__name__}: {exc}", status="failed")
    finally:
        shards.close()
        if proxy is not None:
            proxy.stop()
            for path in (proxy.config_path, proxy.log_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        if server is not None:
            run.server_exit = server.stop()
            if isinstance(server, ServerProcess):
                with contextlib.suppress(OSError):
                    server.log_path.unlink()
        if own_certs and certs is not None:
            certs.close()
        if emulated is not None:
            try:
                emulated.close()
            except (PathError, netns.NetnsError) as exc:
                run.fail(f"could not remove the emulated path: {exc}")
    return run


def log_dir() -> Path:
    return Path(tempfile.gettempdir())
