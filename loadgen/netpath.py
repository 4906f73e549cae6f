"""The emulated network path of a cell: the server and the client workers in two network namespaces joined by
a veth pair, with added round-trip time, a bandwidth limit and random loss, shaped packet by packet.

::

    pbns-<pid>-srv  [pb0 10.213.11.1/30] <── veth ──> [pb0 10.213.11.2/30]  pbns-<pid>-cli
     server, TLS proxy                                                       client workers

- bandwidth: a ``tbf`` root qdisc on each veth end (egress), so each direction has its own limit;
- delay and loss: ``netem`` on each end when the kernel has ``sch_netem``; otherwise each namespace sends the
  packets it *receives* on ``pb0`` to an NFQUEUE (``iptables -t mangle -A PREROUTING -i pb0 -j NFQUEUE``), where
  ``pushbench.delayline`` holds each one for the one-way delay (rtt/2) or drops it with probability loss_pct.
  Holding packets on the receiving side keeps them off the sender's books: a packet held on the sender's
  output path would still count against its socket (TCP small queues) and throttle it.

``measure_path`` then measures what was built (TCP connect time and one-byte request/response round trips
between the two namespaces), so the emulator is checked before each cell, never trusted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushbench import netns
from pushbench.config import NetworkConfig

POOL = "10.213.11.0/24"  # issue 11's addresses; the first /30 is the server/client pair
SERVER_IP, CLIENT_IP = (address.split("/")[0] for address in netns.subnet_30(POOL, 0))
IFNAME = "pb0"
NFQUEUE_NUM = 0
MTU = 1500
ETHERNET_FRAME_BYTES = MTU + 14
TBF_BUFFER_MS = 100.0  # the bottleneck's queue: this much time at the link rate, then tbf drops
DELAYLINE_START_TIMEOUT_S = 10.0
STATS_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 5.0
RTT_TOLERANCE_PCT = 10.0
RTT_TOLERANCE_MS = 2.0

MECHANISM_LOOPBACK = "loopback"
MECHANISM_NETEM = "netem"
MECHANISM_DELAYLINE = "nfqueue-delayline"


class PathError(Exception):
    """The emulated path could not be built or measured."""


PathSpec = NetworkConfig  # the [network] values of a cell


def mechanism(spec: PathSpec, kernel_has_netem: bool) -> str:
    """Which mechanism delays and drops packets for ``spec`` (bandwidth alone needs neither)."""
    if not spec.emulated:
        return MECHANISM_LOOPBACK
    if not spec.needs_delay:
        return "tbf" if spec.bandwidth_mbit > 0 else MECHANISM_LOOPBACK
    base = MECHANISM_NETEM if kernel_has_netem else MECHANISM_DELAYLINE
    return f"{base}+tbf" if spec.bandwidth_mbit > 0 else base


def tbf_args(dev: str, bandwidth_mbit: float, parent: str = "root") -> list[str]:
    """``tc`` arguments of the bandwidth limit: rate, a burst of at least two frames or 1 ms at the rate, and a
    queue of ``TBF_BUFFER_MS`` at the rate (at least ten frames) before tbf drops."""
    rate_bytes_s = bandwidth_mbit * 1e6 / 8
    burst = max(2 * ETHERNET_FRAME_BYTES, math.ceil(rate_bytes_s / 1000))
    limit = max(10 * ETHERNET_FRAME_BYTES, math.ceil(rate_bytes_s * TBF_BUFFER_MS / 1000))
    where = ["root"] if parent == "root" else ["parent", parent]
    rate = f"{round(bandwidth_mbit * 1000)}kbit"
    return ["tc", "qdisc", "add", "dev", dev, *where, "tbf", "rate", rate, "burst", str(burst), "limit", str(limit)]


def netem_args(dev: str, one_way_ms: float, loss_pct: float) -> list[str]:
    """``tc`` arguments of a netem root qdisc (handle 1:) delaying every packet by ``one_way_ms``."""
    args = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "limit", "100000"]
    args += ["delay", f"{one_way_ms * 1000:.0f}us"]
    if loss_pct > 0:
        args += ["loss", f"{loss_pct}%"]
    return args


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with at least ``pct`` % of values at or below it)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rtt_tolerance_ms(configured_rtt_ms: float) -> float:
    """How far a measured round trip may lie from the configured one: 10 % of it, but at least 2 ms."""
    return max(RTT_TOLERANCE_PCT / 100 * configured_rtt_ms, RTT_TOLERANCE_MS)


def path_warning(configured_rtt_ms: float, measured_p50_ms: float) -> str | None:
    """A warning when the measured round trip (p50) is off the configured one by more than the tolerance."""
    if math.isnan(measured_p50_ms):
        return "the path's round trip could not be measured"
    off = measured_p50_ms - configured_rtt_ms
    if abs(off) <= rtt_tolerance_ms(configured_rtt_ms):
        return None
    return (
        f"path round trip p50 {measured_p50_ms:.2f} ms is {off:+.2f} ms off the configured rtt_ms = "
        f"{configured_rtt_ms:g} (tolerance {rtt_tolerance_ms(configured_rtt_ms):.1f} ms): the emulator is not "
        "doing what was asked; latencies of this cell are not comparable"
    )


@dataclass
class PathProbe:
    """Round trips measured across the path: TCP connect times and one-byte request/response times (ms)."""

    connect_ms: list[float] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def summary(self, configured_rtt_ms: float) -> dict[str, Any]:
        """The figures run.json and summary.csv carry; ``path_rtt`` pools both kinds (each is one round trip)."""
        pooled = self.connect_ms + self.request_ms
        return {
            "path_rtt_ms_configured": configured_rtt_ms,
            "path_rtt_ms_p50": percentile(pooled, 50),
            "path_rtt_ms_p99": percentile(pooled, 99),
            "path_connect_ms_p50": percentile(self.connect_ms, 50),
            "path_request_ms_p50": percentile(self.request_ms, 50),
            "path_samples": len(pooled),
            "path_probe_failures": self.failures,
        }


DELAYLINE_CPU_LIMIT_PCT = 80.0  # as for the client workers: beyond it the instrument, not the path, sets the pace
DELAYLINE_LATE_LIMIT_MS = 1.0
DELAYLINE_LATE_LIMIT_FRACTION = 0.1


def delay_line_window(
    start: list[dict[str, Any] | None], end: list[dict[str, Any] | None], wall_s: float
) -> dict[str, Any]:
    """What the delay lines did between two ``stats`` answers (one per delay line, same order) over ``wall_s``.

    CPU is the busiest line's share of one core; lateness (release minus due time) the worst line's.
    """
    if not start and not end:
        return {}
    if len(start) != len(end) or any(s is None for s in start) or any(e is None for e in end):
        return {"delayline_error": "a delay line did not answer (dead or stuck)"}
    pairs = [(s, e) for s, e in zip(start, end, strict=True) if s is not None and e is not None]
    packets = sum(e["packets"] - s["packets"] for s, e in pairs)
    cpu_s = sum(e["cpu_s"] - s["cpu_s"] for s, e in pairs)
    return {
        "delayline_packets": packets,
        "delayline_dropped": sum(e["dropped_loss"] - s["dropped_loss"] for s, e in pairs),
        "delayline_cpu_s": cpu_s,
        "delayline_cpu_pct": max((e["cpu_s"] - s["cpu_s"]) / wall_s * 100 for s, e in pairs) if wall_s > 0 else None,
        "delayline_us_per_packet": cpu_s * 1e6 / packets if packets else None,
        "delayline_late_p50_ms": max(e["late_us_p50"] for _, e in pairs) / 1000,
        "delayline_late_p99_ms": max(e["late_us_p99"] for _, e in pairs) / 1000,
        "delayline_late_max_ms": max(e["late_us_max"] for _, e in pairs) / 1000,
        "delayline_held_peak": max(e["held_peak"] for _, e in pairs),
        "delayline_kernel_dropped": sum(
            e["queue_dropped"] + e["user_dropped"] - s["queue_dropped"] - s["user_dropped"] for s, e in pairs
        ),
    }


def delay_line_saturation(window: dict[str, Any], one_way_ms: float) -> list[str]:
    """Why the delay lines were a saturated instrument in the window (empty when they kept up)."""
    if "delayline_error" in window:
        return [window["delayline_error"]]
    reasons = []
    cpu = window.get("delayline_cpu_pct")
    if cpu is not None and cpu > DELAYLINE_CPU_LIMIT_PCT:
        reasons.append(f"delay line CPU {cpu:.0f}% > {DELAYLINE_CPU_LIMIT_PCT:.0f}% of a core")
    late = window.get("delayline_late_p99_ms")
    limit = max(DELAYLINE_LATE_LIMIT_MS, DELAYLINE_LATE_LIMIT_FRACTION * one_way_ms)
    if late is not None and late > limit:
        reasons.append(f"delay line released packets {late:.1f} ms late (p99) > {limit:.1f} ms")
    dropped = window.get("delayline_kernel_dropped")
    if dropped:
        reasons.append(f"the kernel dropped {dropped} packets queued to the delay line (queue or socket full)")
    return reasons


def parse_snmp_tcp(text: str) -> dict[str, int]:
    """The ``Tcp:`` counters of a /proc/net/snmp text (``OutSegs``, ``InSegs``, ``RetransSegs``, ...)."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=False) if v.lstrip("-").isdigit()}


def tcp_counters(ns: str) -> dict[str, int]:
    """The TCP counters (/proc/net/snmp) of network namespace ``ns``, read by a thread inside it."""
    found: list[dict[str, int]] = []

    def read() -> None:
        with contextlib.suppress(OSError, netns.NetnsError):
            netns.enter(ns)
            found.append(parse_snmp_tcp(Path("/proc/thread-self/net/snmp").read_text()))

    thread = threading.Thread(target=read, name=f"snmp-{ns}")
    thread.start()
    thread.join()
    return found[0] if found else {}


@dataclass
class PathCounters:
    """Counters of an emulated path at one instant: each delay line's answer, the TCP counters of the server's
    and the clients' namespaces, and when (monotonic seconds)."""

    delay_lines: list[dict[str, Any] | None]
    tcp_server: dict[str, int]
    tcp_clients: dict[str, int]
    mono_s: float


def path_counters(path: EmulatedPath) -> PathCounters:
    return PathCounters(
        path.delay_line_stats(), tcp_counters(path.server_ns), tcp_counters(path.client_ns), time.monotonic()
    )


def path_window(start: PathCounters, end: PathCounters) -> dict[str, Any]:
    """What crossed the path between two readings: delay-line work and each side's TCP (re)transmissions."""
    out = delay_line_window(start.delay_lines, end.delay_lines, end.mono_s - start.mono_s)
    # The server's retransmissions travel down, the clients' up.
    for side, s, e in (("down", start.tcp_server, end.tcp_server), ("up", start.tcp_clients, end.tcp_clients)):
        for key, column in (("RetransSegs", "tcp_retrans_segs"), ("OutSegs", "tcp_out_segs")):
            out[f"{column}_{side}"] = e[key] - s[key] if key in s and key in e else None
    return out


class DelayLineProcess:
    """One ``pushbench.delayline`` inside a namespace: started, asked for counters, stopped."""

    def __init__(self, ns: str, one_way_ms: float, loss_pct: float, seed: int) -> None:
        argv = [sys.executable, "-m", "pushbench.delayline", "--queue", str(NFQUEUE_NUM)]
        argv += ["--delay-ms", repr(one_way_ms), "--loss-pct", repr(loss_pct), "--seed", str(seed)]
        self.ns = ns
        self.proc = subprocess.Popen(
            netns.exec_args(ns, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        line = self._read_line(DELAYLINE_START_TIMEOUT_S)
        if line != "ready":
            err = self.stop() or ""
            raise PathError(f"delay line in {ns} did not start: {err.strip()[-300:] or line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return self.proc.stdout.readline().strip() if ready else ""

    def stats(self) -> dict[str, Any] | None:
        """Its counters since it started, or None when it does not answer (dead or stuck)."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            return None
        try:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            line = self._read_line(STATS_TIMEOUT_S)
            return dict(json.loads(line)) if line else None
        except (OSError, ValueError):
            return None

    def stop(self) -> str | None:
        """Close its control pipe (it releases what it holds and exits), SIGKILL if it does not; its stderr."""
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = None
        if self.proc.stderr:
            with contextlib.suppress(OSError, ValueError):
                err = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout:
            self.proc.stdout.close()
        return err


def kernel_has_netem(ns: str) -> bool:
    """Try a netem qdisc on the namespace's loopback (and remove it): does this kernel have ``sch_netem``?"""
    done = netns.run(ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms", check=False)
    if done.returncode != 0:
        return False
    netns.run(ns, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
    return True


def path_requirements(networks: list[NetworkConfig]) -> list[str]:
    """What this machine lacks to run cells with these [network] values (empty when nothing, or all loopback)."""
    if not any(n.emulated for n in networks):
        return []
    problems = netns.missing_requirements()
    if problems or not any(n.needs_delay for n in networks):
        return problems
    if importlib.util.find_spec("netfilterqueue") is None:
        with netns.Namespaces() as spaces:
            netem = kernel_has_netem(spaces.add("probe"))
        if not netem:
            problems.append(
                "this kernel has no sch_netem, so rtt_ms/loss_pct need the delay line's netfilterqueue package: "
                "make setup installs it (Debian: apt-get install libnetfilter-queue-dev; pip install netfilterqueue)"
            )
    return problems


class EmulatedPath:
    """Two namespaces, the veth pair, shaping and delay lines for one cell; ``close()`` removes everything.

    Use as a context manager. ``server_ns``/``server_ip`` is where the server (and a TLS proxy) binds,
    ``client_ns`` where the client workers live.
    """

    def __init__(self, spec: PathSpec, seed: int = 1) -> None:
        self.spec = spec
        self.seed = seed
        self.spaces = netns.Namespaces()
        self.delay_lines: list[DelayLineProcess] = []
        self.server_ns = ""
        self.client_ns = ""
        addr_s, addr_c = netns.subnet_30(POOL, 0)
        self.server_ip, self.client_ip = SERVER_IP, CLIENT_IP
        self.mechanism = MECHANISM_LOOPBACK
        self.commands: list[str] = []
        try:
            self._build(addr_s, addr_c)
        except BaseException:
            self.close()
            raise

    def _tc(self, ns: str, args: list[str]) -> None:
        netns.run(ns, *args)
        self.commands.append(f"[{ns.rsplit('-', 1)[1]}] {' '.join(args)}")

    def _build(self, addr_s: str, addr_c: str) -> None:
        spec = self.spec
        self.server_ns = self.spaces.add("srv")
        self.client_ns = self.spaces.add("cli")
        netns.veth(self.server_ns, IFNAME, addr_s, self.client_ns, IFNAME, addr_c, mtu=MTU)
        for ns in (self.server_ns, self.client_ns):
            # No IPv6 router solicitations or DAD probes on the link: only the cell's own traffic crosses it.
            with contextlib.suppress(netns.NetnsError):
                netns.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        netem = spec.needs_delay and kernel_has_netem(self.server_ns)
        self.mechanism = mechanism(spec, netem)
        for i, ns in enumerate((self.server_ns, self.client_ns)):
            if netem:
                self._tc(ns, netem_args(IFNAME, spec.one_way_ms, spec.loss_pct))
                if spec.bandwidth_mbit > 0:
                    self._tc(ns, tbf_args(IFNAME, spec.bandwidth_mbit, parent="1:1"))
                continue
            if spec.bandwidth_mbit > 0:
                self._tc(ns, tbf_args(IFNAME, spec.bandwidth_mbit))
            if spec.needs_delay:
                rule = ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", IFNAME]
                self._tc(ns, [*rule, "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_NUM)])
                self.delay_lines.append(DelayLineProcess(ns, spec.one_way_ms, spec.loss_pct, self.seed * 2 + i))

    def delay_line_stats(self) -> list[dict[str, Any] | None]:
        return [line.stats() for line in self.delay_lines]

    def describe(self) -> dict[str, Any]:
        """What was built, for run.json."""
        return {
            "mechanism": self.mechanism,
            "rtt_ms": self.spec.rtt_ms,
            "bandwidth_mbit": self.spec.bandwidth_mbit,
            "loss_pct": self.spec.loss_pct,
            "server_ns": self.server_ns,
            "client_ns": self.client_ns,
            "server_ip": self.server_ip,
            "client_ip": self.client_ip,
            "shaping": self.commands,
        }

    def close(self) -> None:
        errors = []
        for line in self.delay_lines:
            line.stop()
        self.delay_lines.clear()
        try:
            self.spaces.close()
        except netns.NetnsError as exc:
            errors.append(str(exc))
        if errors:
            raise PathError("; ".join(errors))

    def __enter__(self) -> EmulatedPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_path(path: EmulatedPath, probes: int = 4, connections: int = 3, requests: int = 2) -> PathProbe:
    """Round trips from the client namespace to the server namespace, against an echo listener of our own.

    ``probes`` threads side by side each open ``connections`` TCP connections one after the other (the connect
    time, SYN to SYN-ACK, is one round trip) and make ``requests`` one-byte request/response exchanges on each
    (TCP_NODELAY on both ends: one round trip each): 36 samples in about 9 round trips by default.
    """
    probe = PathProbe()
    lock = threading.Lock()
    listener = netns.socket_in(path.server_ns)
    listener.settimeout(PROBE_TIMEOUT_S)
    listener.bind((path.server_ip, 0))
    listener.listen(probes * 2)
    target = listener.getsockname()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(PROBE_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(64):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=echo, args=(conn,), name="path-echo", daemon=True).start()

    def client() -> None:
        netns.enter(path.client_ns)  # this thread only
        for _ in range(connections):
            connect_ms: list[float] = []
            request_ms: list[float] = []
            try:
                with socket.socket() as sock:
                    sock.settimeout(PROBE_TIMEOUT_S)
                    t0 = time.perf_counter()
                    sock.connect(target)
                    connect_ms.append((time.perf_counter() - t0) * 1000)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        sock.sendall(b"x")
                        if sock.recv(1) != b"x":
                            raise OSError("the echo answered nothing")
                        request_ms.append((time.perf_counter() - t0) * 1000)
            except OSError:
                with lock:
                    probe.failures += 1
            with lock:
                probe.connect_ms += connect_ms
                probe.request_ms += request_ms

    acceptor = threading.Thread(target=accept, name="path-accept", daemon=True)
    acceptor.start()
    clients = [threading.Thread(target=client, name=f"path-probe-{i}") for i in range(probes)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() the acceptor waits in
    listener.close()
    acceptor.join(PROBE_TIMEOUT_S)
    return probe


def bulk_transfer_mbit(path: EmulatedPath, megabytes: int) -> float:
    """Send ``megabytes`` MiB from the server namespace to the client namespace over one TCP connection; Mbit/s."""
    listener = netns.socket_in(path.server_ns)
    listener.bind((path.server_ip, 0))
    listener.listen(1)
    target = listener.getsockname()
    chunk = b"x" * 65536

    def send() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                for _ in range(megabytes * 16):
                    conn.sendall(chunk)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = 0
    elapsed = math.nan

    def receive() -> None:
        nonlocal received, elapsed
        netns.enter(path.client_ns)
        with socket.create_connection(target, timeout=30) as sock:
            t0 = time.perf_counter()
            while data := sock.recv(1 << 20):
                received += len(data)
            elapsed = time.perf_counter() - t0

    receiver = threading.Thread(target=receive)
    receiver.start()
    receiver.join()
    sender.join(5)
    listener.close()
    return received * 8 / elapsed / 1e6 if elapsed > 0 else math.nan


def main(argv: list[str] | None = None) -> int:
    """``python -m loadgen.netpath [--rtt MS ...]``: build a path per RTT, measure it and push a bulk transfer
    through it; print configured vs measured round trip and the delay line's CPU per packet (needs root)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m loadgen.netpath", description=main.__doc__)
    parser.add_argument("--rtt", type=float, nargs="+", default=[5, 20, 50, 100, 200], help="rtt_ms values")
    parser.add_argument("--megabytes", type=int, default=16, help="bulk transfer size per path (MiB)")
    args = parser.parse_args(argv)
    problems = path_requirements([NetworkConfig(rtt_ms=1)])
    if problems:
        print("; ".join(problems), file=sys.stderr)
        return 2
    print("rtt_ms  mechanism           path p50  path p99  bulk Mbit/s  packets  us/packet  late p99 ms")
    for rtt in args.rtt:
        with EmulatedPath(NetworkConfig(rtt_ms=rtt)) as path:
            probe = measure_path(path).summary(rtt)
            before = path.delay_line_stats()
            t0 = time.monotonic()
            mbit = bulk_transfer_mbit(path, args.megabytes)
            window = delay_line_window(before, path.delay_line_stats(), time.monotonic() - t0)
            print(
                f"{rtt:6g}  {path.mechanism:18s}  {probe['path_rtt_ms_p50']:8.2f}  {probe['path_rtt_ms_p99']:8.2f}  "
                f"{mbit:11.1f}  {window.get('delayline_packets', 0):7d}  "
                f"{window.get('delayline_us_per_packet') or math.nan:9.1f}  "
                f"{window.get('delayline_late_p99_ms', math.nan):11.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
