"""Short polling: ``GET /poll?after=N`` every ``poll_interval_s``, each client at its own seeded phase.

While a client's kept-alive connection is healthy its polls run on callbacks (``CallbackPolls``): the parsed
response delivers its events and the next request goes out from the loop's callbacks, with no task switch.
The client's coroutine waits meanwhile and takes over, doing exactly what it always did, at anything else.
Long polling (``loadgen.longpoll``) is the same with the next request sent as soon as an answer arrives.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec

from loadgen.client import ClientContext, ClientState, event_fields, stale_resume_point
from loadgen.conn import ClientError, Connection, EncodedGet, ErrorKind, Response
from loadgen.metrics import next_due_ns, phase_ns
from pushbench.units import NS_PER_S


class PollBody(msgspec.Struct):
    """A poll response as ``docs/contract.md`` defines it; each event kept as its raw JSON text."""

    cursor: int
    events: list[msgspec.Raw]


_decode_body = msgspec.json.Decoder(PollBody).decode


def parse_poll_body(body: bytes | bytearray) -> tuple[int, list[tuple[int, int, int, int]]]:
    """``{"cursor": C, "events": [...]}`` → (C, [(seq, ts, start, length)]) with each event's span in ``body``.

    The payload of an event is its serialized bytes exactly as the server sent them (``msgspec.Raw``, in order),
    found in the body from the end of the previous one; each is then parsed against the contract's shape.
    """
    try:
        parsed = _decode_body(body)
    except msgspec.MsgspecError:  # malformed JSON, or not the shape of a poll body
        raise ClientError(ErrorKind.PROTOCOL, f"not a poll body: {bytes(body[:80])!r}") from None
    out = []
    pos = 0
    for raw in parsed.events:
        event = memoryview(raw)
        start = body.find(event, pos)  # only separators lie between pos and the event: this is its own span
        seq, ts = event_fields(event)
        length = len(event)
        out.append((seq, ts, start, length))
        pos = start + length
    return parsed.cursor, out


def deliver_poll(ctx: ClientContext, client: ClientState, conn: Connection, response: Response) -> None:
    """A 200 answer to a poll: deliver its events (stamped when its last byte was parsed), move the cursor.
    Raises ClientError (nothing delivered) when the body is not a poll body."""
    cursor, events = parse_poll_body(response.body)
    received_ns, offset = response.received_ns, response.body_offset
    for seq, ts, start, length in events:
        conn.add_down_payload(offset + start, length)
        ctx.deliver(client, seq, ts, received_ns)
    client.cursor = cursor
    client.ready()


async def fetch(ctx: ClientContext, client: ClientState, conn: Connection, path: str, resume: bool = False) -> bool:
    """One poll or long poll on ``conn``: deliver its events, move the cursor; False if the server closes.
    ``resume``: the request is already out (sent by ``CallbackPolls``), only its response is awaited here."""
    cursor = client.cursor
    if resume:
        response = await conn.finish_exchange()
    else:
        response = await conn.exchange(ctx.encoded_get(path).encode(cursor))
    if response.status != 200:
        target = path if cursor is None else f"{path}?after={cursor}"
        if response.status != 410:
            raise ClientError(ErrorKind.HTTP_STATUS, f"{response.status} for GET {target}")
        # The resume point left the history: the events in between are lost (never delivered), resume after.
        ctx.stale_resumes += 1
        ctx.count_error(ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {target}"))
        client.cursor = stale_resume_point(response.body)
        client.ready()
    else:
        deliver_poll(ctx, client, conn, response)
    return response.keep_alive


async def fetch_retrying(
    ctx: ClientContext, client: ClientState, conn: Connection, path: str, resume: bool = False
) -> Connection | None:
    """``fetch`` on ``conn`` (see ``ClientContext.exchange_retrying``); the connection to keep using, or None.
    ``resume``: complete the exchange ``CallbackPolls`` left in flight (a retry sends the request anew)."""

    async def again(c: Connection) -> bool:
        return await fetch(ctx, client, c, path)

    async def first(c: Connection) -> bool:
        return await fetch(ctx, client, c, path, resume=True)

    return await ctx.exchange_retrying(client, conn, again, first if resume else None)


async def fetch_or_recover(
    ctx: ClientContext, client: ClientState, conn: Connection | None, path: str, in_flight: bool
) -> tuple[Connection | None, bool]:
    """One poll or long poll by the client's coroutine: complete the exchange ``CallbackPolls`` left in flight on
    ``conn``, or send a new request on ``conn`` reused or a new connection. A ``ClientError`` drops the
    connection and ``ClientContext.after_failure`` decides whether to go on. (connection to keep, go on)."""
    try:
        if in_flight:
            assert conn is not None
            return await fetch_retrying(ctx, client, conn, path, resume=True), True
        conn = await ctx.reuse_or_connect(client, conn)
        return await fetch_retrying(ctx, client, conn, path), True
    except ClientError as exc:
        if conn is not None:
            conn.abort()
        return None, await ctx.after_failure(client, exc)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A short-poll client's send times: ``anchor + phase + k * interval`` (ns since the epoch)."""

    anchor_ns: int
    phase_ns: int
    interval_ns: int

    def next(self, now_ns: int) -> int:
        """The first send time at or after ``now_ns`` (open model: the ticks a late poll missed are skipped)."""
        return next_due_ns(self.anchor_ns, self.phase_ns, self.interval_ns, now_ns)


class CallbackPolls:
    """One client's polls on one healthy kept-alive connection, driven by the event loop's callbacks.

    The connection calls ``answered`` when a response is complete: a 200 that keeps the connection alive has
    its events delivered there (stamped when parsed) and the next request goes out, at once for long polling,
    at the next send time on the worker's ``SendWheel`` for short polling (``send``). Anything else ends it:
    ``done`` is set to True when an exchange is left in flight for the coroutine (an error, a status other
    than 200, ``Connection: close``, a malformed body, a send still queued), to False when the next request
    was not sent (the stop, a connection the server closed or reset); the coroutine then does exactly what it
    did before these callbacks existed, from that point.
    """

    __slots__ = ("client", "conn", "ctx", "done", "due_ns", "get", "schedule")

    def __init__(
        self, ctx: ClientContext, client: ClientState, conn: Connection, get: EncodedGet, schedule: Schedule | None
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.conn = conn
        self.get = get
        self.schedule = schedule
        self.due_ns = 0  # short polling: the send time of the request sent or to send next
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def send(self, answered_now: bool = False) -> None:
        """Send the next request. ``answered_now``: called as the previous answer is read, so the connection's
        kernel state is not read first to see whether the server closed it meanwhile (``Connection.reusable``)."""
        if self.done.done():  # the coroutine took over (or was cancelled) before this send came due
            return
        conn = self.conn
        if self.ctx.stop.is_set() or not conn.reusable(answered_now):
            self.done.set_result(False)
            return
        try:
            conn.send_request(self.get.encode(self.client.cursor), self.answered)
        except ClientError:  # closed meanwhile: the coroutine's reuse_or_connect says how
            self.done.set_result(False)
            return
        if conn.write_paused:
            self.done.set_result(True)

    def answered(self) -> None:
        if self.done.done():
            return
        conn = self.conn
        response = conn.completed_response()
        if response is None or response.status != 200 or not response.keep_alive:
            self.done.set_result(True)
            return
        try:
            deliver_poll(self.ctx, self.client, conn, response)
        except ClientError:  # the coroutine's fetch parses it again and raises the same error
            self.done.set_result(True)
            return
        schedule = self.schedule
        if schedule is None:
            self.send(answered_now=True)
        else:
            self.due_ns = schedule.next(max(time.time_ns(), self.due_ns + 1))
            self.ctx.wheel.add(self.due_ns, self.send)

    async def run(self, due_ns: int = 0) -> bool:
        """Send the first request (short polling: at ``due_ns``) and wait until the coroutine must take over;
        True when an exchange is left in flight (``fetch(..., resume=True)`` completes it)."""
        if self.schedule is None:
            self.send()
        else:
            self.due_ns = due_ns
            self.ctx.wheel.add(due_ns, self.send)
        try:
            return await self.done
        except asyncio.CancelledError:
            self.conn.cancel_exchange()
            raise


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    """Poll at ``anchor + phase + k * interval`` (open model: a slow poll skips the ticks it missed)."""
    plan = ctx.plan
    interval = round(plan.poll_interval_s * NS_PER_S)
    schedule = Schedule(plan.anchor_ns, phase_ns(plan.seed, client.index, interval), interval)
    path = plan.transport_spec.path
    conn: Connection | None = None
    try:
        # Connect and learn the cursor at the client's ramp-up time, so that with keep-alive the connection
        # exists before the window whatever the client's phase.
        try:
            conn = await ctx.connect(client)
            conn = await fetch_retrying(ctx, client, conn, path)
        except ClientError as exc:
            if conn is not None:
                conn.abort()
                conn = None
            ctx.count_error(exc)
        due = schedule.next(time.time_ns())
        in_flight = False  # the callbacks left the exchange of the poll due at ``due`` to complete here
        while True:
            if conn is not None and not in_flight:  # the next polls by callbacks, until one needs this coroutine
                polls = CallbackPolls(ctx, client, conn, ctx.encoded_get(path), schedule)
                in_flight = await polls.run(due)
                due = polls.due_ns
            if not in_flight and not await ctx.sleep_until(due):
                break
            conn, go_on = await fetch_or_recover(ctx, client, conn, path, in_flight)
            if not go_on:
                break
            in_flight = False
            due = schedule.next(max(time.time_ns(), due + 1))
    finally:
        if conn is not None:
            conn.abort()
