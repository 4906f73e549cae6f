"""What every client of one worker shares: the cell's plan, the window book, the counters, reconnecting."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from loadgen.conn import ClientError, Connection, ConnectionReused, EncodedGet, ErrorKind, Phase, WindowBook
from loadgen.headers import HeaderProfile
from loadgen.metrics import LatencyRecorder, SeqTracker, backoff_s
from loadgen.tls import client_context
from pushbench.stacks import DEFAULT_STACK, STACKS, Stack
from pushbench.transports import TRANSPORTS, Transport
from pushbench.units import NS_PER_MS, NS_PER_S


@dataclass(frozen=True)
class Plan:
    """One cell as the clients see it: where to connect, what to do, and the timeline (ns since the epoch)."""

    host: str
    port: int
    transport: str
    scenario: str
    clients: int
    poll_interval_s: float
    send_interval_s: float
    longpoll_timeout_s: float
    payload_bytes: int
    seed: int
    ws_compress: bool
    ramp_up_s: float
    profile: HeaderProfile
    anchor_ns: int  # ramp start; poll and echo schedules count from here
    window_start_ns: int
    window_end_ns: int
    stop_ns: int
    seq_first: int  # feed events with intended time in the window: seq_first..seq_last
    seq_last: int
    stack: str = DEFAULT_STACK  # pushbench.stacks: h1 (cleartext, straight to the server), h1-tls, h2-tls
    ca_file: str = ""  # TLS stacks: the run's CA certificate, the only one the clients trust
    clock_sync: bool = False  # shards estimate their clock offset to the server (GET /time) and correct latencies
    # Loopback addresses the clients connect from, round-robin by client index, when one source address has too
    # few ephemeral ports for the cell (``loadgen.sources``); empty: the kernel picks the source.
    source_addresses: tuple[str, ...] = ()
    cyclic_gc: bool = False  # load.cyclic_gc: the workers run CPython's cyclic garbage collector

    def source_address(self, client: int) -> str | None:
        """The address client ``client`` connects from (None: the kernel's choice)."""
        sources = self.source_addresses
        return sources[client % len(sources)] if sources else None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    @property
    def stack_spec(self) -> Stack:
        """The registry's record of this cell's stack (TLS, HTTP/2, ALPN, scheme)."""
        return STACKS[self.stack]

    @property
    def scheme(self) -> str:
        return self.stack_spec.scheme

    @property
    def transport_spec(self) -> Transport:
        """The registry's record of this cell's transport (its path, whether the server holds requests...)."""
        return TRANSPORTS[self.transport]

    @property
    def request_timeout_s(self) -> float:
        return max(10.0, self.longpoll_timeout_s + 10.0) if self.transport_spec.holds_requests else 10.0


@dataclass
class ClientState:
    """One simulated client."""

    index: int
    rng: random.Random
    tracker: SeqTracker
    cursor: int | None = None  # last seq received (resume point)
    conn_seq: int = 0
    attempt: int = 0  # consecutive failures, for backoff
    subscribed_ns: int | None = None  # first successful exchange (cursor known, stream open)

    def ready(self) -> None:
        """A request succeeded or a stream opened: reset the backoff; remember when the client first got going."""
        self.attempt = 0
        if self.subscribed_ns is None:
            self.subscribed_ns = time.time_ns()


class StopSignal(asyncio.Event):
    """The cell's stop: an ``asyncio.Event`` whose ``set`` also ends every ``sleep`` at once."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        super().set()
        for waiter in self._sleepers:
            if not waiter.done():
                waiter.set_result(None)

    async def sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` (one loop timer, one future) or until ``set``, whichever comes first."""
        if self.is_set():
            return
        waiter = asyncio.get_running_loop().create_future()
        timer = waiter.get_loop().call_later(delay_s, _wake, waiter)
        self._sleepers.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._sleepers.discard(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SendWheel:
    """Callbacks due at wall-clock times (a client's next short poll), grouped by millisecond: one loop timer
    per millisecond that has something due, however many clients are due in it, so one wake of the loop
    serves them all. Like ``ClientContext.sleep_until`` it never calls early: a callback due at ``t`` is called
    from the first wake after the millisecond holding ``t`` has ended on the wall clock (uvloop's timers are
    whole milliseconds of a coarse clock anyway), a timer that fires early waits again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[Callable[[], None]]] = {}

    def add(self, due_ns: int, call: Callable[[], None]) -> None:
        """Call ``call()`` once the wall clock has reached ``due_ns``."""
        ms = -(-due_ns // NS_PER_MS)
        slot = self._slots.get(ms)
        if slot is None:
            self._slots[ms] = [call]
            self._arm(ms)
        else:
            slot.append(call)

    def _arm(self, ms: int) -> None:
        loop = self._loop
        delay_s = (ms * NS_PER_MS - time.time_ns()) / NS_PER_S
        if delay_s <= 0:
            loop.call_soon(self._fire, ms)
        else:  # whole milliseconds of the loop's own clock, as sleep_until sleeps
            loop.call_later(max(1, round((delay_s + time.monotonic() - loop.time()) * 1000)) / 1000, self._fire, ms)

    def _fire(self, ms: int) -> None:
        if time.time_ns() < ms * NS_PER_MS:
            self._arm(ms)
            return
        for call in self._slots.pop(ms):
            call()


@dataclass
class ClientContext:
    plan: Plan
    book: WindowBook = field(default_factory=WindowBook)
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    errors: Counter[str] = field(default_factory=Counter)
    stop: StopSignal = field(default_factory=StopSignal)
    stale_resumes: int = 0  # 410 Gone: the resume point had left the history (those events count as lost)
    reconnects: int = 0
    requests_retried: int = 0  # ConnectionReused: sent on a connection the server had just closed
    limit_errors: Counter[str] = field(default_factory=Counter)  # errors caused by an OS limit, by loadgen.conn.Limit
    error_samples: list[str] = field(default_factory=list)
    # HTTP/2 stacks: whether the proxy advertises RFC 8441 (None until known); without it WebSockets go on
    # their own HTTP/1.1 TLS connections (``h1_fallback``: ALPN offers http/1.1 only), as a browser does.
    extended_connect: bool | None = None
    h1_fallback: bool = False
    _ssl: dict[tuple[str, ...], ssl.SSLContext] = field(default_factory=dict)
    _gets: dict[str, EncodedGet] = field(default_factory=dict)
    _wheel: SendWheel | None = None

    @property
    def wheel(self) -> SendWheel:
        """The worker's ``SendWheel`` (made on first use, in the running loop)."""
        if self._wheel is None:
            self._wheel = SendWheel(asyncio.get_running_loop())
        return self._wheel

    def encoded_get(self, path: str) -> EncodedGet:
        """The bytes of ``GET path?after=N`` with the cell's header profile, encoded once per worker."""
        get = self._gets.get(path)
        if get is None:
            headers = self.plan.profile.fetch_headers(self.plan.hostport, self.plan.scheme)
            get = self._gets[path] = EncodedGet.build(path, headers)
        return get

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the cell's stack (one per worker and ALPN offer), None in cleartext."""
        stack = self.plan.stack_spec
        if not stack.tls:
            return None
        offer = ("http/1.1",) if self.h1_fallback else stack.alpn
        if offer not in self._ssl:
            self._ssl[offer] = client_context(stack, self.plan.ca_file, offer)
        return self._ssl[offer]

    clock_offset_ns: int = 0  # server clock minus this host's, added to receive times (feed: ts is the server's)

    def deliver(self, client: ClientState, seq: int, intended_ns: int, received_ns: int) -> None:
        """One message arrived: first deliveries inside the window get a latency."""
        if client.tracker.add(seq):
            self.latency.record(received_ns + self.clock_offset_ns, intended_ns)

    def deliver_event(
        self,
        client: ClientState,
        conn: Connection,
        raw: bytes | bytearray,
        at: int,
        wire_bytes: int,
        received_ns: int,
        payload_bytes: int | None = None,
    ) -> int:
        """One pushed event (a WebSocket text frame, an SSE record) read from ``conn``: ``raw`` is the event,
        ``wire_bytes`` stream bytes at ``at`` carried it (``payload_bytes`` of it when compressed). Counts its
        payload in the connection's ledger, parses it (as ``event_fields`` does) and delivers it; returns its seq.
        Once per message in the streams' sinks, so in as few steps as ``add_down_payload`` + ``deliver`` allow:
        the parse inline, the latency appended without a call of ``LatencyRecorder.record``."""
        try:
            event = _decode_event(raw)
        except msgspec.MsgspecError:
            raise not_an_event(raw) from None
        seq = event.seq
        ledger = conn.ledger
        if at >= ledger.down_open_from and payload_bytes is None:  # inside the window: ``add_down`` without a call
            ledger.down_payload += wire_bytes
        else:
            ledger.add_down(at, wire_bytes, payload_bytes)
        if client.tracker.add(seq):
            self.latency.append_ns(received_ns + self.clock_offset_ns - event.ts)
        return seq

    def count_error(self, exc: ClientError) -> None:
        if self.book.phase is not Phase.AFTER or not self.stop.is_set():
            self.errors[exc.kind.value] += 1
            if exc.limit is not None:
                self.limit_errors[exc.limit.value] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append(str(exc))

    async def connect(self, client: ClientState) -> Connection:
        client.conn_seq += 1
        conn = await Connection.open(
            self.book,
            client.index,
            client.conn_seq,
            self.plan.host,
            self.plan.port,
            self.plan.request_timeout_s,
            self.ssl_context,
            self.plan.source_address(client.index),
        )
        return conn

    async def reuse_or_connect(self, client: ClientState, conn: Connection | None) -> Connection:
        """``conn`` if the server has not closed it, else a new connection (the old one closed cleanly)."""
        if conn is not None and conn.reset_while_idle():
            conn.abort()
            conn = None
            self.count_error(ClientError(ErrorKind.DISCONNECT, "kept-alive connection was reset while idle"))
        elif conn is not None and conn.peer_closed():
            await conn.close()
            conn = None
        return conn if conn is not None else await self.connect(client)

    async def sleep_until(self, wall_ns: int, precise: bool = False) -> bool:
        """Sleep until ``wall_ns`` has passed on the wall clock; False if the cell stopped first.

        Never returns early: uvloop (libuv) rounds timer delays to whole milliseconds and counts them on a
        coarse millisecond clock, so a timer can fire up to ~1.5 ms early, and a send made then could get its
        reply before its intended time (a latency < 0); an early wake sleeps again. By default each sleep is
        whole milliseconds of the loop's own clock (at least one), about 1.1 wakes per call, returning a
        median ~0.7 ms after ``wall_ns``. ``precise`` asks for the remaining time as it is, which spins (about
        20 wakes) through the last millisecond to return ~0.3 ms after it: for sends whose latency is
        measured from their intended time (echo), not for polls spaced by their interval.
        """
        stop = self.stop
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            delay_s = (wall_ns - time.time_ns()) / NS_PER_S
            if delay_s <= 0:
                return True
            if not precise:
                delay_s = max(1, round((delay_s + time.monotonic() - loop.time()) * 1000)) / 1000
            await stop.sleep(delay_s)
        return False

    async def run_sessions(
        self,
        client: ClientState,
        session: Callable[[Connection], Awaitable[Connection | None]],
        *,
        keep_alive: bool = False,
    ) -> None:
        """Run ``session`` on a connection over and over until the cell stops, the shape every client shares.

        ``session`` returns the connection when it may be reused (``keep_alive``: the next session goes out on
        it unless the server closed it) or None. On a ClientError the connection is aborted, the error counted
        and the client backs off before reconnecting (and resuming from its cursor).
        """
        conn: Connection | None = None
        try:
            while not self.stop.is_set():
                try:
                    conn = await (self.reuse_or_connect(client, conn) if keep_alive else self.connect(client))
                    conn = await session(conn)
                    if not keep_alive and conn is not None:
                        conn.abort()
                        conn = None
                except ClientError as exc:
                    if conn is not None:
                        conn.abort()
                        conn = None
                    if not await self.after_failure(client, exc):
                        break
        finally:
            if conn is not None:
                conn.abort()

    async def exchange_retrying(
        self,
        client: ClientState,
        conn: Connection,
        exchange: Callable[[Connection], Awaitable[bool]],
        first: Callable[[Connection], Awaitable[bool]] | None = None,
    ) -> Connection | None:
        """One HTTP request/response ``exchange`` on ``conn`` (it returns the response's keep-alive), once more
        on a new connection if the server had closed the kept-alive one; the connection to keep using, or None
        when the server said it closes. ``first`` replaces the first attempt (one already under way)."""
        try:
            keep = await (first or exchange)(conn)
        except ConnectionReused:
            self.requests_retried += 1
            conn.abort()
            conn = await self.connect(client)
            try:
                keep = await exchange(conn)
            except BaseException:  # the caller aborts the connection it gave, not this one
                conn.abort()
                raise
        if keep:
            return conn
        await conn.wait_eof(0.5)
        await conn.close()
        return None

    async def after_failure(self, client: ClientState, exc: ClientError) -> bool:
        """Count the error and wait a backoff; False if the cell stopped meanwhile."""
        self.count_error(exc)
        client.attempt += 1
        self.reconnects += 1
        return await self.sleep_until(time.time_ns() + int(backoff_s(client.attempt, client.rng) * NS_PER_S))


def stale_resume_point(body: bytes) -> int:
    """From a 410 Gone body (``{"oldest": O, ...}``): resume just before the oldest event still in history."""
    try:
        data = json.loads(body)
        return max(0, int(data["oldest"]) - 1)
    except (ValueError, KeyError, TypeError):
        raise ClientError(ErrorKind.PROTOCOL, f"410 without a usable 'oldest': {body[:80]!r}") from None


class Event(msgspec.Struct, gc=False):
    """A feed event as ``docs/contract.md`` defines it (other fields are allowed: skipped, checked as JSON only)."""

    seq: int
    ts: int
    data: str = ""


_decode_event = msgspec.json.Decoder(Event).decode


def event_fields(raw: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(seq, ts) of one serialized event: the whole event is parsed as JSON against the contract's shape
    (``msgspec``: integer seq and ts, ``data`` a string, decoded and checked as UTF-8); anything else is a
    protocol error."""
    try:
        event = _decode_event(raw)
    except msgspec.MsgspecError:  # malformed JSON, or not the shape of an event
        raise not_an_event(raw) from None
    return event.seq, event.ts


def not_an_event(raw: bytes | bytearray | memoryview) -> ClientError:
    return ClientError(ErrorKind.PROTOCOL, f"not an event: {bytes(raw[:80])!r}")
