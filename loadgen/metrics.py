"""The measurement logic of the load generator, as pure functions and small classes over numbers.

Nothing here touches a socket or a clock: the clients call these with the times and byte offsets they
observed, and the tests call them with hand-computed ones.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

from pushbench.units import NS_PER_S

NS_PER_US = 1_000

HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_SIGNIFICANT_DIGITS = 3

CPU_SATURATION_PCT = 80.0
LOOP_LAG_SATURATION_MS = 10.0
# A loop that lags less than this fraction of the latencies it timestamps barely changes them (see loop_lag_limit_ms).
LOOP_LAG_SATURATION_FRACTION = 0.10


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- the schedule -------------------------------------------------------------------------------------------


def period_ns(rate_hz: float) -> int:
    """Nanoseconds between ticks of a feed publishing ``rate_hz`` ticks per second (the servers' rounding)."""
    return round(NS_PER_S / rate_hz)


def align_window(ref_ts_ns: int, tick_ns: int, not_before_ns: int, duration_ns: int) -> tuple[int, int]:
    """A measured window [start, end) that starts and ends half a tick between publications.

    ``ref_ts_ns`` is the intended time of any published tick. Starting mid-tick means no event is on the wire
    while the byte counters are read, so every event falls wholly inside or outside the window. The length
    is ``duration_ns`` rounded to whole ticks (at least one).
    """
    half = tick_ns // 2
    k = _ceil_div(not_before_ns - ref_ts_ns - half, tick_ns)
    start = ref_ts_ns + k * tick_ns + half
    ticks = max(1, round(duration_ns / tick_ns))
    return start, start + ticks * tick_ns


def window_seq_range(
    ref_seq: int, ref_ts_ns: int, tick_ns: int, burst: int, start_ns: int, end_ns: int
) -> tuple[int, int]:
    """(first, last) seq of the events whose intended time lies in [start, end); last < first when none.

    Seqs start at 1 and every tick emits ``burst`` events sharing the tick's intended time, so the tick of
    seq ``s`` is ``(s - 1) // burst`` and tick ``t`` is due at ``ref_ts + (t - ref_tick) * tick_ns``.
    """
    ref_tick = (ref_seq - 1) // burst
    first_tick = max(0, ref_tick + _ceil_div(start_ns - ref_ts_ns, tick_ns))
    last_tick = ref_tick + _ceil_div(end_ns - ref_ts_ns, tick_ns) - 1
    return first_tick * burst + 1, (last_tick + 1) * burst


def phase_ns(seed: int, client: int, interval_ns: int) -> int:
    """A client's seeded random phase in [0, interval): short polls and echo sends do not fire together."""
    return random.Random(seed * 1_000_003 + client).randrange(interval_ns)


def next_due_ns(anchor_ns: int, phase: int, interval_ns: int, now_ns: int) -> int:
    """The first time ``anchor + phase + k * interval`` (k integer) that is >= ``now_ns``."""
    first = anchor_ns + phase
    k = max(0, _ceil_div(now_ns - first, interval_ns))
    return first + k * interval_ns


def due_index_range(anchor_ns: int, phase: int, interval_ns: int, start_ns: int, end_ns: int) -> tuple[int, int]:
    """(first, last) k >= 0 with ``anchor + phase + k * interval`` in [start, end); last < first when none."""
    first = anchor_ns + phase
    lo = max(0, _ceil_div(start_ns - first, interval_ns))
    hi = _ceil_div(end_ns - first, interval_ns) - 1
    return lo, max(hi, lo - 1)


def backoff_s(attempt: int, rng: random.Random, base_s: float = 0.05, cap_s: float = 2.0) -> float:
    """Reconnect delay: exponential from ``base_s``, capped, with full jitter so clients do not stampede."""
    return rng.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 30)))


# --- messages -----------------------------------------------------------------------------------------------


class SeqTracker:
    """Which seqs of [first, last] one client received: received, duplicated, lost (never received)."""

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self._seen = bytearray(max(0, last - first + 1))
        self.received = 0
        self.duplicated = 0

    @property
    def expected(self) -> int:
        return len(self._seen)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def add(self, seq: int) -> bool:
        """Record one delivery; True when it is a first delivery of a seq inside the window."""
        if not self.first <= seq <= self.last:
            return False
        i = seq - self.first
        if self._seen[i]:
            self.duplicated += 1
            return False
        self._seen[i] = 1
        self.received += 1
        return True


# --- latency ------------------------------------------------------------------------------------------------


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)


def latency_us(received_ns: int, intended_ns: int) -> int:
    """Latency from the *intended* time, in µs, clamped to the histogram's range [1 µs, 60 s]."""
    return min(HDR_HIGHEST_US, max(HDR_LOWEST_US, (received_ns - intended_ns) // NS_PER_US))


class LatencyRecorder:
    """One worker's latencies: an HDR histogram plus the exact count, sum and max.

    ``record`` (once per message) only appends the latency in ns to an array; the rest is computed from the
    array, in one pass, when any of it is read (``fold``): the histogram takes each distinct µs value once with
    its count. The same figures, a fraction of the CPU per message (hdrh records in pure Python).
    """

    def __init__(self) -> None:
        self._histogram = new_histogram()
        self._pending = array("q")  # ns, not yet folded in
        # ``record`` without a Python call: append one latency in ns (the array is emptied in place when folded)
        self.append_ns = self._pending.append
        self._count = 0
        self._sum_ns = 0
        self._max_ns = 0
        self._out_of_range = 0  # clamped into [1 µs, 60 s]: a negative latency means clocks disagree

    def record(self, received_ns: int, intended_ns: int) -> None:
        self._pending.append(received_ns - intended_ns)

    def fold(self) -> None:
        """Take the pending latencies into the histogram and the totals."""
        if not self._pending:
            return
        pending = array("q", self._pending)
        del self._pending[:]  # in place: ``append_ns`` keeps appending to it
        self._count += len(pending)
        self._sum_ns += sum(pending)  # exact (Python ints)
        self._max_ns = max(self._max_ns, max(pending))
        delta = np.frombuffer(pending, dtype=np.int64)
        self._out_of_range += int(np.count_nonzero((delta < NS_PER_US) | (delta > HDR_HIGHEST_US * NS_PER_US)))
        record_us(self._histogram, delta // NS_PER_US)  # clamped as latency_us() clamps

    @property
    def count(self) -> int:
        self.fold()
        return self._count

    @property
    def sum_ns(self) -> int:
        self.fold()
        return self._sum_ns

    @property
    def max_ns(self) -> int:
        self.fold()
        return self._max_ns

    @property
    def out_of_range(self) -> int:
        self.fold()
        return self._out_of_range

    @property
    def histogram(self) -> HdrHistogram:
        self.fold()
        return self._histogram

    def encode(self) -> str:
        return encode_histogram(self.histogram)


def record_us(histogram: HdrHistogram, values_us: Iterable[int] | np.ndarray) -> None:
    """Record many µs values at once, each clamped to the histogram's range [1 µs, 60 s]: every distinct value
    once with its count (``HdrHistogram.record_value`` is pure Python: once per value would cost µs each)."""
    clipped = np.clip(np.asarray(values_us, dtype=np.int64), HDR_LOWEST_US, HDR_HIGHEST_US)
    values, counts = np.unique(clipped, return_counts=True)
    for value, n in zip(values.tolist(), counts.tolist(), strict=True):
        histogram.record_value(value, n)


def encode_histogram(histogram: HdrHistogram) -> str:
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram:
    """Merge encoded histograms losslessly (``decode_and_add``)."""
    merged = new_histogram()
    for text in encoded:
        base64.b64decode(text, validate=True)  # a corrupt string fails here with a clear error
        merged.decode_and_add(text)
    return merged


@dataclass(frozen=True)
class LatencySummary:
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def summarize_latency(histogram: HdrHistogram, count: int, sum_ns: int, max_ns: int) -> LatencySummary:
    """Mean and max exact (from count/sum/max); percentiles from the HDR histogram. NaN when empty."""
    if count == 0:
        nan = float("nan")
        return LatencySummary(0, nan, nan, nan, nan, nan)

    def pct(p: float) -> float:
        return histogram.get_value_at_percentile(p) / 1000.0

    return LatencySummary(count, sum_ns / count / 1e6, pct(50), pct(90), pct(99), max_ns / 1e6)


# --- bytes --------------------------------------------------------------------------------------------------


def overlap(lo: int, hi: int, window_lo: int, window_hi: float) -> int:
    """Length of [lo, hi) ∩ [window_lo, window_hi)."""
    return max(0, int(min(hi, window_hi)) - max(lo, window_lo)) if hi > window_lo and lo < window_hi else 0


class PayloadLedger:
    """Counts the payload bytes of one connection that crossed the wire inside the measured window.

    Payload bytes are placed by their position in the TCP byte stream (offset from the first byte after
    the handshake), and the window is the stream range between the kernel's counters read at window start
    and end (``TcpInfo.stream_offsets``). So a message half-read when the counters were read is split
    exactly where the kernel's count split it, and ``tcp - payload`` is exact overhead.

    Received bytes are reported after they have been read, so they always lie at or below the kernel's
    count at any later instant: a span seen before the end mark cannot reach past it.
    """

    def __init__(self) -> None:
        self.down_start: int | None = None
        self.down_end: int | None = None
        self.up_start: int | None = None
        self.up_end: int | None = None
        self.down_payload = 0
        # Received bytes at or after this offset count whole (the window has started and not ended): the start
        # mark while the window is open, else infinity. One comparison per message (``ClientContext.deliver_event``).
        self.down_open_from: float = math.inf
        self._up_spans: list[tuple[int, int]] = []

    def mark_start(self, down_offset: int, up_offset: int) -> None:
        self.down_start, self.up_start = down_offset, up_offset
        self.down_open_from = down_offset if self.down_end is None else math.inf
        self._up_spans = [(o, n) for o, n in self._up_spans if o + n > up_offset]

    def mark_end(self, down_offset: int, up_offset: int) -> None:
        self.down_end, self.up_end = down_offset, up_offset
        self.down_open_from = math.inf

    def add_down(self, offset: int, length: int, payload_bytes: int | None = None) -> None:
        """``length`` stream bytes read at ``offset`` carried payload (``payload_bytes`` of it when compressed)."""
        if offset >= self.down_open_from and payload_bytes is None:  # read inside the window
            self.down_payload += length
            return
        start = self.down_start
        if start is None:
            return
        hi = math.inf if self.down_end is None else self.down_end
        inside = overlap(offset, offset + length, start, hi)
        if payload_bytes is not None and length > 0:
            inside = round(payload_bytes * inside / length)
        self.down_payload += inside

    def add_up(self, offset: int, length: int) -> None:
        """``length`` payload bytes written at stream ``offset`` (not necessarily sent yet)."""
        if self.up_end is not None and offset >= self.up_end:
            return
        self._up_spans.append((offset, length))

    @property
    def up_payload(self) -> int:
        if self.up_start is None:
            return 0
        hi = math.inf if self.up_end is None else self.up_end
        return sum(overlap(o, o + n, self.up_start, hi) for o, n in self._up_spans)


def overhead_bytes(tcp_bytes: int, payload_bytes: int) -> int:
    """Everything in the TCP byte stream that is not application payload (may be < 0 with compression)."""
    return tcp_bytes - payload_bytes


# --- the load generator itself ------------------------------------------------------------------------------


def cpu_percent(cpu_s: float, wall_s: float) -> float:
    """CPU seconds over wall seconds, in % of one core."""
    return 100.0 * cpu_s / wall_s if wall_s > 0 else float("nan")


def loop_lag_limit_ms(
    latency_p99_ms: float, floor_ms: float = LOOP_LAG_SATURATION_MS, fraction: float = LOOP_LAG_SATURATION_FRACTION
) -> float:
    """The event-loop lag p99 beyond which a worker counts as saturated: max(``floor_ms``, ``fraction`` × latency p99).

    Lag matters because a late loop stamps messages late and inflates the latencies it measures. A once-a-second
    burst of thousands of messages per worker makes a short lag that is small next to latencies of hundreds of ms;
    where latencies are small (or unknown: NaN) the absolute floor applies.
    """
    if math.isnan(latency_p99_ms):
        return floor_ms
    return max(floor_ms, fraction * latency_p99_ms)


def saturation_reasons(
    cpu_pct: float,
    loop_lag_p99_ms: float,
    latency_p99_ms: float = math.nan,
    cpu_limit_pct: float = CPU_SATURATION_PCT,
) -> list[str]:
    """Why a worker measured itself rather than the transport; empty when it kept up.

    Saturated when its CPU is beyond ``cpu_limit_pct`` of a core, or its loop lag p99 beyond
    ``loop_lag_limit_ms(latency_p99_ms)`` (the cell's measured latency p99; NaN when it has none).
    """
    reasons = []
    if cpu_pct > cpu_limit_pct:
        reasons.append(f"load generator CPU {cpu_pct:.0f}% > {cpu_limit_pct:.0f}% of a core")
    lag_limit = loop_lag_limit_ms(latency_p99_ms)
    if loop_lag_p99_ms > lag_limit:
        rule = f"the larger of {LOOP_LAG_SATURATION_MS:.0f} ms and {LOOP_LAG_SATURATION_FRACTION:.0%} of latency p99"
        measured = "none measured" if math.isnan(latency_p99_ms) else f"{latency_p99_ms:.1f} ms"
        reasons.append(f"event-loop lag p99 {loop_lag_p99_ms:.1f} ms > {lag_limit:.1f} ms ({rule}, {measured})")
    return reasons


def schedule_problem(ts_in_seq_order: list[int], tick_ns: int, burst: int, tolerance: float = 0.001) -> str | None:
    """Do a server's events follow the schedule the config declares (``burst`` events every ``tick_ns``)?

    The window's seq range is computed from that schedule, so a server started elsewhere (``[target] url``)
    must keep it: consecutive ticks ``tick_ns`` apart (within ``tolerance`` of it) and every tick between
    the first and last seen holding ``burst`` events. None when it does, or when fewer than two ticks are seen.
    """
    ticks: list[list[int]] = []  # [ts, events] in seq order
    for ts in ts_in_seq_order:
        if ticks and ticks[-1][0] == ts:
            ticks[-1][1] += 1
        else:
            ticks.append([ts, 1])
    for (a, _), (b, _) in itertools.pairwise(ticks):
        if abs((b - a) - tick_ns) > tolerance * tick_ns:
            return (
                f"the server's events are {(b - a) / 1e6:.3f} ms apart where feed.rate_hz says {tick_ns / 1e6:.3f} ms: "
                "set [feed] rate_hz (and burst) to the server's schedule"
            )
    for _, count in ticks[1:-1]:  # the first and last may be cut by the cursor or caught mid-burst
        if count != burst:
            return f"the server publishes {count} events per tick where feed.burst says {burst}"
    return None
