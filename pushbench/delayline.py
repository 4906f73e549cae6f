"""A packet-level delay line in user space: every packet iptables queues (NFQUEUE) is held for a fixed delay,
or dropped with a given probability, then handed back to the kernel. Not a proxy: TCP's own SYN, ACKs and
retransmissions travel through it as packets, so handshakes, ACK clocking and slow start behave as on a real path.

It exists for kernels without ``sch_netem`` (this one). Run it inside a namespace whose iptables rules queue
packets to ``--queue``::

    ip netns exec NS python -m pushbench.delayline --queue 0 --delay-ms 25 --loss-pct 1 --seed 7

It prints ``ready`` once bound. Each ``stats`` line on stdin is answered with one JSON line of counters since
start (see ``Counters``); closing stdin, SIGTERM or SIGINT stop it, releasing the packets it still holds.

A packet's hold starts at its kernel receive timestamp when there is one (the kernel stamps packets while any
socket asks for timestamps, and this program keeps one such socket open), so time a packet waited to be read
counts toward its delay instead of adding to it. Releases use ``select`` timeouts (microsecond resolution);
how late each release came is recorded (``late_us_p50``/``p99``/``max``) so the delay line's accuracy is measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import select
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from pushbench.units import NS_PER_S

QUEUE_MAXLEN = 65536  # packets the kernel may hold for us; beyond it the kernel drops (counted: queue_dropped)
SO_TIMESTAMPNS = 35
REALTIME_PRIORITY = 10  # SCHED_FIFO, below the kernel's own threads (50)
COPY_META = 1  # the delay line never reads payloads


@dataclass
class Counters:
    """What one delay line did since it started (``stats`` answers these as JSON)."""

    packets: int = 0  # queued to us by the kernel
    dropped_loss: int = 0  # dropped on purpose (loss_pct)
    released: int = 0
    held_now: int = 0
    held_peak: int = 0
    stamped: int = 0  # packets that carried a kernel receive timestamp
    # Since the previous ``stats`` request: release time minus due time, and kernel receive stamp to our read.
    late_us_p50: float = 0.0
    late_us_p99: float = 0.0
    late_us_max: float = 0.0
    read_lag_us_p99: float = 0.0
    cpu_s: float = 0.0  # this process, user + system
    realtime: bool = False  # it runs at a real-time priority (SCHED_FIFO)
    queue_dropped: int = 0  # the kernel's count for our queue (queue full), from /proc/net/netfilter/nfnetlink_queue
    user_dropped: int = 0  # the kernel's count for our queue (netlink socket full)


def queue_counters(proc_text: str, queue: int) -> tuple[int, int]:
    """(queue_dropped, user_dropped) of ``queue`` from /proc/net/netfilter/nfnetlink_queue text.

    Columns: queue number, peer port id, queue total, copy mode, copy range, queue dropped, user dropped,
    id sequence, 1.
    """
    for line in proc_text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0] == str(queue):
            return int(fields[5]), int(fields[6])
    return 0, 0


class DelayLine:
    """Holds NFQUEUE packets for ``delay_ns`` (or drops them with probability ``loss``); see the module docstring."""

    def __init__(self, queue: int, delay_ns: int, loss: float, seed: int) -> None:
        from netfilterqueue import NetfilterQueue

        self.queue_num = queue
        self.delay_ns = delay_ns
        self.loss = loss
        self.rng = random.Random(seed)
        self.held: collections.deque[tuple[int, Any]] = collections.deque()
        self.counters = Counters()
        self.late = HdrHistogram(1, 60_000_000, 2)
        self.read_lag = HdrHistogram(1, 60_000_000, 2)
        # A socket asking for timestamps makes the kernel stamp every received packet (a global switch).
        self._stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stamper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.nfq = NetfilterQueue()
        self.nfq.bind(queue, self._on_packet, max_len=QUEUE_MAXLEN, mode=COPY_META)
        self.fd = self.nfq.get_fd()

    def _on_packet(self, packet: Any) -> None:
        now_wall = time.time_ns()
        now = time.monotonic_ns()
        c = self.counters
        c.packets += 1
        if self.loss and self.rng.random() < self.loss:
            packet.drop()
            c.dropped_loss += 1
            return
        stamp = packet.get_timestamp()
        arrived = now
        if stamp:
            lag_ns = now_wall - int(stamp * NS_PER_S)
            if 0 <= lag_ns < NS_PER_S:
                arrived = now - lag_ns
                c.stamped += 1
                self.read_lag.record_value(max(1, lag_ns // 1000))
        self.held.append((arrived + self.delay_ns, packet))
        if len(self.held) > c.held_peak:
            c.held_peak = len(self.held)

    def release_due(self) -> float | None:
        """Hand back every packet that is due; seconds until the next one is (None when none is held)."""
        held, late = self.held, self.late
        now = time.monotonic_ns()
        while held and held[0][0] <= now:
            due, packet = held.popleft()
            packet.accept()
            late.record_value(max(1, (now - due) // 1000))
            self.counters.released += 1
        if held:
            return max(0.0, (held[0][0] - time.monotonic_ns()) / NS_PER_S)
        return None

    def snapshot(self) -> Counters:
        """The counters now; the lateness figures cover the time since the previous snapshot."""
        c = self.counters
        c.held_now = len(self.held)
        late, lag = self.late, self.read_lag
        c.late_us_p50 = float(late.get_value_at_percentile(50)) if late.get_total_count() else 0.0
        c.late_us_p99 = float(late.get_value_at_percentile(99)) if late.get_total_count() else 0.0
        c.late_us_max = float(late.get_max_value()) if late.get_total_count() else 0.0
        c.read_lag_us_p99 = float(lag.get_value_at_percentile(99)) if lag.get_total_count() else 0.0
        late.reset()
        lag.reset()
        c.cpu_s = time.process_time()
        c.realtime = os.sched_getscheduler(0) == os.SCHED_FIFO
        with contextlib.suppress(OSError):
            text = Path("/proc/self/net/netfilter/nfnetlink_queue").read_text()
            c.queue_dropped, c.user_dropped = queue_counters(text, self.queue_num)
        return c

    def run(self, control: Any) -> None:
        """Serve until ``control`` (a text stream, usually stdin) closes or a stop signal arrives."""
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        watch = [self.fd, control]
        try:
            while not stopping:
                timeout = self.release_due()
                try:
                    ready, _, _ = select.select(watch, [], [], timeout if timeout is not None else 0.5)
                except InterruptedError:
                    continue
                if self.fd in ready:
                    self.nfq.run(block=False)
                if control in ready:
                    line = control.readline()
                    if not line:
                        break
                    if line.strip() == "stats":
                        print(json.dumps(asdict(self.snapshot())), flush=True)
        finally:
            for _, packet in self.held:
                with contextlib.suppress(Exception):
                    packet.accept()
            self.held.clear()
            self.nfq.unbind()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pushbench.delayline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number the iptables rules use")
    parser.add_argument("--delay-ms", type=float, required=True, help="how long each packet is held")
    parser.add_argument("--loss-pct", type=float, default=0.0, help="percent of packets dropped at random")
    parser.add_argument("--seed", type=int, default=1, help="seed of the loss decisions")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or not 0 <= args.loss_pct < 100:
        print("--delay-ms must be >= 0 and --loss-pct in [0, 100)", file=sys.stderr)
        return 2
    # Like netem, which runs in the kernel's softirq context, the delay line must not wait behind busy processes:
    # a real-time priority (it sleeps in select between packets, so it takes no CPU from anyone when idle).
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    try:
        line = DelayLine(args.queue, int(args.delay_ms * 1_000_000), args.loss_pct / 100, args.seed)
    except (OSError, ImportError) as exc:
        print(f"delay line: cannot bind NFQUEUE {args.queue}: {exc}", file=sys.stderr)
        return 1
    with os.fdopen(sys.stdin.fileno(), "r", closefd=False) as control:
        print("ready", flush=True)
        line.run(control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
