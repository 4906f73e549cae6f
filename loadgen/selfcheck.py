"""``python -m loadgen.selfcheck`` (``make bench-client``): pushbench's client against well-known clients.

A self-check of the instrument: on one pushbench server, one client at a time, each client's process CPU is
read (user + system, all its threads) at the start and end of a window while the server's ``/stats`` counts what
it served in that window (WebSocket/SSE deliveries, poll requests). CPU per message or request is their
quotient, the same rule for every client, so the ratios printed at the end compare like with like:

- push receive: pushbench's WebSocket and SSE clients vs Node's ``ws`` (npm) and python ``websockets``,
  ``clients`` connections and ``rate_hz`` events per second each. Per message every client parses the frame
  (SSE: the HTTP chunk and the record), checks the text is UTF-8 and parses the whole event as JSON, building
  every value: Node's ``ws`` (``loadgen/peers/ws_client.cjs``: ``ws`` validates UTF-8, ``JSON.parse``, a
  ``typeof seq`` check, a counter), python ``websockets`` (UTF-8 decode, ``json.loads``), pushbench
  (``msgspec`` against the contract's shape: integer seq and ts, ``data`` a string decoded as UTF-8; a malformed
  event is a counted protocol error). pushbench also does its
  measuring, which the peers do not: it places the payload bytes in the connection's ledger, marks the seq
  received (loss and duplicates) and appends the latency to an array (the HDR histogram is filled from that
  array in one numpy pass when read, after the window). It runs as in a cell: one worker, uvloop, the
  event-loop lag probe;
- polling: pushbench's short-poll client vs ``autocannon`` (npm) and ``h2load`` (Debian ``nghttp2-client``, over
  HTTP/1.1) at the same fixed request rate, and ``wrk`` (Debian; closed loop, as fast as the server answers), all
  on ``GET /poll``. They pace differently: pushbench sends each client's polls on its own schedule, one every
  ``1 / polls_per_s`` (a loop timer per millisecond that has sends due); ``h2load --rps`` likewise sends each
  client's requests from a timer every ``1 / rps`` (nghttp2's ``rps_cb``); ``autocannon -R`` sends each
  connection's share of the second's requests back to back as answers come (``reqsMadeThisSecond``), then waits
  for the next second, so most of its requests need no wake-up of their own. A fourth row, ``python uvloop
  floor`` (``run_bare_poller``), is the least a CPython poller paced like pushbench's can cost here: the same
  requests and timers on uvloop with nothing measured, so the table shows how much of pushbench's cost is its
  measuring and how much is CPython's and uvloop's own per request.

The machine's noise is of the order of the differences measured, so the whole set is measured ``--rounds`` times
(default 3), every client once per round, in the opposite order every other round (no client always runs first
after the server starts, or last); each ratio is taken within a round (side by side) and the median over the
rounds is printed with its range, as are the µs per operation. A process's CPU is read from the kernel's clock of
that process, to the nanosecond (``process_cpu_reader``), not in 10-ms clock ticks.

The npm peers live in ``.peers/node_modules`` (``make bench-client`` installs them there, never globally);
a peer that is not installed is reported as missing, not skipped silently. The figures are written to
``results/<UTC time>-bench-client.json`` (a new file each run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import psutil

from loadgen.client import Plan
from loadgen.headers import make_profile
from loadgen.runner import ROOT, SERVER_START_TIMEOUT_S, ServerProcess
from pushbench.config import LoadConfig
from pushbench.units import NS_PER_S

PEERS_DIR = ROOT / ".peers" / "node_modules"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sample:
    """One client's cost over one window: CPU seconds of its process and the operations the server counted."""

    test: str  # "ws", "sse", "poll"
    client: str
    cpu_s: float
    ops: int
    wall_s: float
    note: str = ""
    round: int = 1  # which round of the run (each round measures every client once, side by side)

    @property
    def us_per_op(self) -> float:
        return us_per_op(self.cpu_s, self.ops)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.wall_s if self.wall_s > 0 else float("nan")


def us_per_op(cpu_s: float, ops: int) -> float:
    """CPU microseconds per operation; NaN when nothing was counted."""
    return cpu_s * 1e6 / ops if ops > 0 else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is not a positive number."""
    return numerator / denominator if denominator > 0 else float("nan")


# --- the server and the measured window ----------------------------------------------------------------------


def start_server(rate_hz: float, payload_bytes: int) -> ServerProcess:
    """A pushbench server on 127.0.0.1 port 0 with the feed this benchmark needs (history large enough to
    resume, heartbeats off so only events are counted)."""
    sets = {
        "feed.rate_hz": rate_hz,
        "feed.payload_bytes": payload_bytes,
        "feed.history": 100_000,
        "server.sse_heartbeat_s": 0,
        "server.ws_heartbeat_s": 0,
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pushbench-selfcheck-server-{os.getpid()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "servers", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    if not line.startswith("serving http://"):
        proc.kill()
        proc.wait()
        raise SystemExit(f"selfcheck: server did not start: {log_path.read_text(errors='replace')[-300:]}")
    host, port = line.removeprefix("serving http://").rsplit(":", 1)
    server = ServerProcess(proc, host, int(port), log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while server.stats() is None:
        if time.monotonic() > deadline:
            server.stop()
            raise SystemExit("selfcheck: server does not answer /stats")
        time.sleep(0.05)
    return server


Counter = Callable[[dict[str, Any]], int]


def measure(
    server: ServerProcess,
    test: str,
    client: str,
    argv: list[str],
    count: Counter,
    ready: Counter,
    ready_at: int,
    warmup_s: float,
    window_s: float,
    env: dict[str, str] | None = None,
) -> Sample:
    """Start ``argv``, wait until ``ready(stats) >= ready_at`` and ``warmup_s``, then measure one window."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cpu_s = process_cpu_reader(proc.pid)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (stats := server.stats()) is None or ready(stats) < ready_at:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
                raise RuntimeError(f"{client} did not get going (exit {proc.poll()}): {err.strip()}")
            time.sleep(0.05)
        time.sleep(warmup_s)
        stats0 = server.stats() or {}
        cpu0, wall0 = cpu_s(), time.monotonic()
        time.sleep(window_s)
        cpu1, wall1 = cpu_s(), time.monotonic()
        stats1 = server.stats() or {}
        drops = stats1.get("slow_client_drops", 0) - stats0.get("slow_client_drops", 0)
        note = f"{drops} slow-client drops: the client did not keep up" if drops else ""
        return Sample(test, client, cpu1 - cpu0, count(stats1) - count(stats0), wall1 - wall0, note)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def process_cpu_reader(pid: int) -> Callable[[], float]:
    """A reader of process ``pid``'s CPU seconds (user + system, all its threads, live and ended).

    The kernel's own clock of that process (``clock_getcpuclockid`` + ``clock_gettime``), to the nanosecond:
    ``/proc/<pid>/stat`` (psutil) gives the same total in whole clock ticks, 10 ms, about 3 % of the CPU a
    client spends in a 5-s window here. psutil's reading where the clock cannot be had."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        clock = ctypes.c_int()
        if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            raise OSError("clock_getcpuclockid")

        def read() -> float:
            ts = _Timespec()
            if libc.clock_gettime(clock.value, ctypes.byref(ts)) != 0:
                raise OSError(ctypes.get_errno(), f"clock_gettime of process {pid}")
            return ts.tv_sec + ts.tv_nsec / NS_PER_S

        read()
        return read
    except (OSError, AttributeError):
        ps = psutil.Process(pid)
        return lambda: sum(ps.cpu_times()[:2])


def _deliveries(transport: str) -> Counter:
    return lambda stats: int(stats["deliveries"][transport])


def _opened(transport: str) -> Counter:
    return lambda stats: int(stats["requests"].get(transport, 0))


# --- the clients under test ----------------------------------------------------------------------------------


def pushbench_argv(
    transport: str, server: ServerProcess, clients: int, seconds: float, poll_interval_s: float
) -> list[str]:
    return [
        sys.executable, "-m", "loadgen.selfcheck", "--run-pushbench", transport, server.host, str(server.port),
        str(clients), str(seconds), str(poll_interval_s),
    ]  # fmt: skip


async def run_pushbench(transport: str, host: str, port: int, clients: int, seconds: float, interval: float) -> None:
    """pushbench's own clients (one worker, as in a cell) with a window spanning the whole run."""
    from loadgen.worker import run_worker

    now = time.time_ns()
    latest = json.loads(await _http_get(host, port, "/stats"))["latest_seq"]
    plan = Plan(
        host=host, port=port, transport=transport, scenario="feed", clients=clients, poll_interval_s=interval,
        send_interval_s=1.0, longpoll_timeout_s=30.0, payload_bytes=100, seed=1, ws_compress=False, ramp_up_s=0.2,
        profile=make_profile(LoadConfig(header_profile="minimal")), anchor_ns=now, window_start_ns=now + NS_PER_S // 2,
        window_end_ns=now + int(seconds * NS_PER_S), stop_ns=now + int(seconds * NS_PER_S),
        seq_first=latest + 1, seq_last=latest + 1 + int(seconds * 10_000),
    )  # fmt: skip
    await run_worker(0, list(range(clients)), plan, "uvloop")


async def _http_get(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


async def run_websockets(url: str, clients: int) -> None:
    """python ``websockets``: ``clients`` connections, each message parsed as JSON."""
    from websockets.asyncio.client import connect

    async def one() -> None:
        async with connect(url, compression=None, max_size=None) as ws:
            async for message in ws:
                json.loads(message)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await stop.wait()
    for task in tasks:
        task.cancel()


async def run_bare_poller(host: str, port: int, clients: int, polls_per_s: float) -> None:
    """The floor of a CPython poller: uvloop, one kept-alive connection per client, each client's ``GET /poll`` on
    its own timer every ``1 / polls_per_s`` (open model, as pushbench's), each answer read to the end of its
    Content-Length body and dropped: no status check, no body parse, no stamping, no counting. pushbench's poll
    client costs its measuring above this; this costs CPython's and uvloop's own work per request above a C peer."""
    loop = asyncio.get_running_loop()
    request = f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    interval = 1.0 / polls_per_s

    class Poller(asyncio.Protocol):
        def __init__(self, first_at: float) -> None:
            self.buf = b""
            self.end = -1  # where the answer being read ends in buf; -1 while its head is incomplete
            self.due = first_at

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            loop.call_at(self.due, self.send)

        def send(self) -> None:
            self.due += interval
            self.transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if self.end < 0:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                at = self.buf.find(b"\r\nContent-Length: ", 0, head_end)
                length = int(self.buf[at + 18 : self.buf.find(b"\r\n", at + 18)]) if at >= 0 else 0
                self.end = head_end + 4 + length
            if len(self.buf) >= self.end:
                self.buf, self.end = self.buf[self.end :], -1
                loop.call_at(max(self.due, loop.time()), self.send)

    start = loop.time() + 0.1
    for i in range(clients):
        await loop.create_connection(functools.partial(Poller, start + i * interval / clients), host, port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def node_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(PEERS_DIR)}


def missing_peers() -> list[str]:
    """What is not installed (``make bench-client`` installs all of it)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    for package in ("ws", "autocannon"):
        if not (PEERS_DIR / package / "package.json").exists():
            missing.append(f"{package} (npm install --prefix .peers {package})")
    if shutil.which("wrk") is None:
        missing.append("wrk (apt-get install wrk)")
    if shutil.which("h2load") is None:
        missing.append("h2load (apt-get install nghttp2-client)")
    return missing


# --- the benchmark -------------------------------------------------------------------------------------------


def push_samples(args: argparse.Namespace, missing: list[str], reverse: bool = False) -> list[Sample]:
    server = start_server(args.rate_hz, args.payload_bytes)
    try:
        ws_url = f"ws://{server.host}:{server.port}/ws"
        total = args.warmup_s + args.window_s + 5
        n = args.clients
        common = dict(warmup_s=args.warmup_s, window_s=args.window_s)
        runs: list[tuple[str, str, list[str], dict[str, str] | None]] = [
            ("ws", "pushbench", pushbench_argv("ws", server, n, total, 1.0), None),
            ("sse", "pushbench", pushbench_argv("sse", server, n, total, 1.0), None),
            ("ws", "python websockets", [sys.executable, "-m", "loadgen.selfcheck", "--run-websockets", ws_url, str(n)], None),
        ]  # fmt: skip
        if not any(m.startswith(("node", "ws ")) for m in missing):
            cjs = str(Path(__file__).parent / "peers" / "ws_client.cjs")
            runs.append(("ws", "node ws", ["node", cjs, ws_url, str(n)], node_env()))
        samples = []
        for test, client, argv, env in reversed(runs) if reverse else runs:
            opened = _opened(test)(server.stats() or {})
            samples.append(
                measure(server, test, client, argv, _deliveries(test), _opened(test), opened + n, env=env, **common)
            )
            print(f"  {test:5} {client:18} {samples[-1].us_per_op:8.1f} µs CPU per message", file=sys.stderr)
        return samples
    finally:
        server.stop()


def poll_samples(args: argparse.Namespace, missing: list[str], reverse: bool = False) -> list[Sample]:
    server = start_server(1.0, args.payload_bytes)  # one event per second: nearly every answer is empty
    try:
        url = f"http://{server.host}:{server.port}/poll"
        n, rate = args.poll_clients, args.poll_clients * args.polls_per_s
        seconds = args.warmup_s + args.window_s + 5
        runs: list[tuple[str, list[str], dict[str, str] | None]] = [
            ("pushbench", pushbench_argv("poll", server, n, seconds, 1.0 / args.polls_per_s), None)
        ]
        floor = [sys.executable, "-m", "loadgen.selfcheck", "--run-bare-poller", server.host, str(server.port), str(n)]
        runs.append(("python uvloop floor", [*floor, f"{args.polls_per_s:g}"], None))
        if not any(m.startswith(("node", "autocannon")) for m in missing):
            autocannon = str(PEERS_DIR / "autocannon" / "autocannon.js")
            total = f"{rate:g}"  # for all connections, each sending its share of a second back to back
            argv = ["node", autocannon, "-c", str(n), "-R", total, "-d", str(int(seconds)), url]
            runs.append((f"autocannon -R {total}", argv, node_env()))
        if shutil.which("h2load"):
            rps = f"{args.polls_per_s:g}"  # per client, on a timer
            argv = ["h2load", "--h1", "-c", str(n), "--rps", rps, "-D", str(int(seconds)), url]
            runs.append((f"h2load --rps {rps}", argv, None))
        if shutil.which("wrk"):
            runs.append(("wrk (closed loop)", ["wrk", "-t1", f"-c{n}", f"-d{int(seconds)}s", url], None))
        samples = []
        for client, argv, env in reversed(runs) if reverse else runs:
            before = _opened("poll")(server.stats() or {})
            samples.append(
                measure(
                    server,
                    "poll",
                    client,
                    argv,
                    _opened("poll"),
                    _opened("poll"),
                    before + n,
                    warmup_s=args.warmup_s,
                    window_s=args.window_s,
                    env=env,
                )
            )
            print(f"  poll  {client:18} {samples[-1].us_per_op:8.1f} µs CPU per request", file=sys.stderr)
        return samples
    finally:
        server.stop()


def ratios(samples: list[Sample]) -> list[tuple[str, float]]:
    """pushbench's CPU per operation over each peer's, per test (< 1: pushbench is leaner), within one round."""
    out = []
    for test in ("ws", "sse", "poll"):
        ours = [s for s in samples if s.test == test and s.client == "pushbench"]
        if not ours:
            continue
        for peer in samples:
            if peer.client != "pushbench" and peer.test in (test, "ws" if test == "sse" else test):
                out.append(
                    (f"pushbench {test} / {peer.client} ({peer.test})", ratio(ours[0].us_per_op, peer.us_per_op))
                )
    return out


@dataclass(frozen=True)
class Spread:
    """The median of one figure over the rounds, with its lowest and highest value."""

    median: float
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def spread(values: list[float]) -> Spread:
    """Median, min and max of the values that are numbers (NaN: none were)."""
    numbers = sorted(v for v in values if v == v)
    if not numbers:
        return Spread(float("nan"), float("nan"), float("nan"))
    return Spread(statistics.median(numbers), numbers[0], numbers[-1])


def by_round(samples: list[Sample]) -> list[list[Sample]]:
    rounds = sorted({s.round for s in samples})
    return [[s for s in samples if s.round == r] for r in rounds]


def median_ratios(samples: list[Sample]) -> list[tuple[str, Spread]]:
    """Each ratio computed within each round (side by side), then its median and range over the rounds."""
    per_round = [dict(ratios(group)) for group in by_round(samples)]
    names = list(dict.fromkeys(name for r in per_round for name in r))
    return [(name, spread([r[name] for r in per_round if name in r])) for name in names]


def median_costs(samples: list[Sample]) -> list[tuple[str, str, Spread]]:
    """(test, client, µs CPU per operation over the rounds) in the order the clients ran."""
    keys = list(dict.fromkeys((s.test, s.client) for s in samples))
    return [(t, c, spread([s.us_per_op for s in samples if (s.test, s.client) == (t, c)])) for t, c in keys]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadgen.selfcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=100, help="push connections per client (default 100)")
    p.add_argument("--rate-hz", type=float, default=100.0, help="events per second on each (default 100)")
    p.add_argument("--payload-bytes", type=int, default=100)
    p.add_argument("--poll-clients", type=int, default=20)
    p.add_argument("--polls-per-s", type=float, default=100.0, help="per poll client (default 100)")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--only", choices=("push", "poll"), help="run one half")
    p.add_argument(
        "--rounds", type=int, default=3, help="measure every client this many times, ratios as medians (default 3)"
    )
    p.add_argument("--out", default="results", help="folder for the JSON record (default results)")
    p.add_argument("--run-pushbench", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--run-websockets", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--run-bare-poller", nargs=4, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _run_child(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_pushbench:
        transport, host, port, n, seconds, interval = args.run_pushbench
        _run_child(run_pushbench(transport, host, int(port), int(n), float(seconds), float(interval)))
        return 0
    if args.run_websockets:
        with contextlib.suppress(KeyboardInterrupt):
            _run_child(run_websockets(args.run_websockets[0], int(args.run_websockets[1])))
        return 0
    if args.run_bare_poller:
        host, port, n, rate = args.run_bare_poller
        with contextlib.suppress(KeyboardInterrupt):
            _run_child(run_bare_poller(host, int(port), int(n), float(rate)))
        return 0
    missing = missing_peers()
    for m in missing:
        print(f"selfcheck: missing {m}: its row is left out", file=sys.stderr)
    if args.rounds < 1:
        print(f"selfcheck: --rounds {args.rounds}: must be at least 1", file=sys.stderr)
        return 2
    random.seed(0)
    samples: list[Sample] = []
    for r in range(1, args.rounds + 1):
        got: list[Sample] = []
        if args.only in (None, "push"):
            print(
                f"round {r}/{args.rounds}, push receive: {args.clients} clients x {args.rate_hz:g} events/s",
                file=sys.stderr,
            )
            got += push_samples(args, missing, reverse=r % 2 == 0)
        if args.only in (None, "poll"):
            print(
                f"round {r}/{args.rounds}, polling: {args.poll_clients} clients x {args.polls_per_s:g} polls/s",
                file=sys.stderr,
            )
            got += poll_samples(args, missing, reverse=r % 2 == 0)
        samples += [replace(s, round=r) for s in got]
    print(f"\n{'test':5} {'client':22} {'µs CPU/op, median (range) of ' + str(args.rounds) + ' rounds':>42}")
    for test, client, cost in median_costs(samples):
        print(f"{test:5} {client:22} {cost.text(1):>42}")
    for s in samples:
        if s.note:
            print(f"  round {s.round}: {s.test} {s.client}: {s.note}")
    ratio_spreads = median_ratios(samples)
    print(f"\n{'ratio (each within one round)':55} median (range)")
    for name, value in ratio_spreads:
        print(f"{name:55} {value.text()}")
    record = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {k: v for k, v in vars(args).items() if not k.startswith("run_")},
        "samples": [{**asdict(s), "us_per_op": s.us_per_op} for s in samples],
        "ratios": {name: value.median for name, value in ratio_spreads},  # medians over the rounds
        "ratio_ranges": {name: [value.low, value.high] for name, value in ratio_spreads},
        "missing": missing,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-bench-client.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    tmp.rename(path)
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
