"""The one event source every transport serves: an open-model publisher with a bounded history.

Tick ``n`` is due at ``start + n / rate_hz`` and emits ``burst`` events, each stamped with the tick's
*intended* time, so a late publisher shows up as latency and in ``late_ticks`` instead of being hidden
(wrk2's answer to coordinated omission). Each event is serialized once; every subscriber and transport
reuses the same bytes.

Transports never hold queues per subscriber: they keep a cursor (the last seq they delivered) and ask
the feed for what comes after it. A slow subscriber therefore costs no server memory beyond its socket
buffers; if it falls so far behind that its cursor leaves the history, ``StaleCursor`` says so.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pushbench.units import NS_PER_MS, NS_PER_S


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts_ns: int  # intended publish time, ns since the Unix epoch
    body: bytes  # the serialized JSON object, shared by every delivery


class StaleCursor(Exception):
    """A cursor older than the history: events in between are gone and the client must be told."""

    def __init__(self, after: int, oldest: int, latest: int) -> None:
        self.after = after
        self.oldest = oldest
        self.latest = latest
        super().__init__(
            f"cursor {after} is older than the history: events {after + 1}..{oldest - 1} are gone "
            f"(history holds {oldest}..{latest})"
        )

    def to_json(self) -> dict[str, object]:
        return {"error": str(self), "after": self.after, "oldest": self.oldest, "latest": self.latest}


class FeedClosed(Exception):
    """The server is shutting down; streams end."""


def tick_due_ns(start_ns: int, tick: int, period_ns: int) -> int:
    """When tick ``tick`` (from 0) should fire on an open-model schedule."""
    return start_ns + tick * period_ns


def period_ns(rate_hz: float) -> int:
    return round(NS_PER_S / rate_hz)


def is_late(lateness_ns: int, threshold_ns: int) -> bool:
    """A tick that fired more than ``threshold_ns`` after its due time is late."""
    return lateness_ns > threshold_ns


def make_payload(rng: random.Random, size: int) -> str:
    """``size`` printable characters that need no JSON escaping (and do not compress trivially)."""
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def serialize_event(seq: int, ts_ns: int, data: str) -> bytes:
    return json.dumps({"seq": seq, "ts": ts_ns, "data": data}, separators=(",", ":")).encode()


class Feed:
    """The publisher and its history. Create inside a running loop; ``run()`` publishes until cancelled."""

    def __init__(
        self,
        rate_hz: float,
        payload_bytes: int,
        burst: int = 1,
        history: int = 1000,
        late_threshold_ms: float = 5.0,
        seed: int = 1,
    ) -> None:
        self.period_ns = period_ns(rate_hz)
        self.payload_bytes = payload_bytes
        self.burst = burst
        self.history = history
        self.late_threshold_ns = int(late_threshold_ms * NS_PER_MS)
        self._rng = random.Random(seed)
        self._events: list[Event] = []
        self._first_index_seq = 1  # seq of self._events[0]
        self.latest_seq = 0
        self.late_ticks = 0
        self.ticks = 0
        self.closed = False
        # Held waiters (``wait_after``): each is one future, woken (True) by the next publication or shutdown, or
        # (False) by its deadline. All timeouts share one loop timer, set for the earliest deadline in the heap.
        self._waiters: list[asyncio.Future[bool]] = []
        self._deadlines: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._deadline_order = itertools.count()  # ties in the heap never compare futures
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Called with each tick's events as they are published (servers.fanout writes them to subscribers),
        # and once when the feed closes.
        self.listeners: list[Callable[[list[Event]], None]] = []
        self.close_listeners: list[Callable[[], None]] = []

    @property
    def oldest_seq(self) -> int:
        """The oldest seq still in history (latest + 1 when nothing was published yet)."""
        return max(1, self.latest_seq - self.history + 1)

    @property
    def events_published(self) -> int:
        return self.latest_seq

    def publish_tick(self, intended_ns: int) -> list[Event]:
        """Emit one tick's ``burst`` events stamped with ``intended_ns`` and wake every waiter."""
        new = []
        for _ in range(self.burst):
            seq = self.latest_seq + 1
            event = Event(
                seq, intended_ns, serialize_event(seq, intended_ns, make_payload(self._rng, self.payload_bytes))
            )
            self._events.append(event)
            self.latest_seq = seq
            new.append(event)
        # Trim in chunks so each publish stays O(burst) amortised.
        excess = len(self._events) - self.history
        if excess > self.history:
            del self._events[:excess]
            self._first_index_seq += excess
        self.ticks += 1
        for listener in self.listeners:
            listener(new)
        self._wake()
        return new

    def _wake(self) -> None:
        """Answer every held waiter: each checks again whether what it waits for exists."""
        waiters, self._waiters = self._waiters, []
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in waiters:
            if not waiter.done():  # a cancelled waiter (its request went away) is skipped
                waiter.set_result(True)

    def _expire(self) -> None:
        """The loop timer: answer every waiter whose deadline has come (False), then wait for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        # As a per-waiter loop timer would: the timer's own time counts as come (uvloop may fire ~1 ms early).
        now = max(loop.time(), self._timer_at)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():
                waiter.set_result(False)
        if heap:
            self._timer_at = heap[0][0]
            self._timer = loop.call_at(self._timer_at, self._expire)

    def close(self) -> None:
        """End every stream and answer every waiter (shutdown)."""
        self.closed = True
        for listener in self.close_listeners:
            listener()
        self._wake()

    def events_after(self, after: int) -> list[Event]:
        """Events with seq > ``after`` still in history; StaleCursor if some after it are gone."""
        if after < 0:
            raise ValueError(f"cursor must be >= 0, got {after}")
        if after >= self.latest_seq:
            return []
        if after + 1 < self.oldest_seq:
            raise StaleCursor(after, self.oldest_seq, self.latest_seq)
        return self._events[after + 1 - self._first_index_seq :]

    async def wait_after(self, after: int, timeout: float | None = None) -> bool:
        """Wait until an event with seq > ``after`` exists; False on timeout or shutdown.

        One future per waiter and one loop timer for every deadline (not a timer and a context manager each):
        a publication releases thousands of held long polls at once.
        """
        if self.latest_seq > after:
            return True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.latest_seq <= after:
            if self.closed or (deadline is not None and deadline <= loop.time()):
                return False
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(waiter)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, next(self._deadline_order), waiter))
                if self._timer is None or deadline < self._timer_at:
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer_at = deadline
                    self._timer = loop.call_at(deadline, self._expire)
            if not await waiter:
                return False
        return True

    async def follow(self, after: int, idle_s: float | None = None) -> AsyncIterator[Event | None]:
        """Yield every event after ``after`` in order, forever; ``None`` after ``idle_s`` of silence.

        Raises StaleCursor if the follower falls out of history, FeedClosed on shutdown.
        """
        cursor = after
        while True:
            for event in self.events_after(cursor):
                yield event
                cursor = event.seq
            if not await self.wait_after(cursor, idle_s):
                if self.closed:
                    raise FeedClosed()
                yield None  # heartbeat opportunity

    async def run(self) -> None:
        """Publish on the open-model schedule until cancelled."""
        start_mono_ns = time.monotonic_ns()
        start_wall_ns = time.time_ns()
        tick = 0
        while not self.closed:
            due_mono = tick_due_ns(start_mono_ns, tick, self.period_ns)
            delay_ns = due_mono - time.monotonic_ns()
            # uvloop rounds timers to whole ms and may wake up to ~1 ms early: wait until the tick is really due,
            # so no event is ever published (and received) before its intended time.
            while (remaining_ns := due_mono - time.monotonic_ns()) > 0:
                await asyncio.sleep(remaining_ns / NS_PER_S)
            if is_late(time.monotonic_ns() - due_mono, self.late_threshold_ns):
                self.late_ticks += 1
            self.publish_tick(tick_due_ns(start_wall_ns, tick, self.period_ns))
            tick += 1
            if delay_ns <= 0:
                # Behind schedule: still yield so a flood of catch-up ticks cannot starve clients.
                await asyncio.sleep(0)
