"""Short polling: ``GET /poll?after=N`` every ``poll_interval_s``, each client at its own seeded phase."""

from __future__ import annotations

import time

import msgspec

from loadgen.client import ClientContext, ClientState, event_fields, stale_resume_point
from loadgen.conn import ClientError, Connection, ErrorKind
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


async def fetch(ctx: ClientContext, client: ClientState, conn: Connection, path: str) -> bool:
    """One poll or long poll on ``conn``: deliver its events, move the cursor; False if the server closes."""
    cursor = client.cursor
    response = await conn.exchange(ctx.encoded_get(path).encode(cursor))
    received_ns = response.received_ns  # not after the await: a task resumes after every ready socket's callback
    if response.status != 200:
        target = path if cursor is None else f"{path}?after={cursor}"
        if response.status != 410:
            raise ClientError(ErrorKind.HTTP_STATUS, f"{response.status} for GET {target}")
        # The resume point left the history: the events in between are lost (never delivered), resume after.
        ctx.stale_resumes += 1
        ctx.count_error(ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {target}"))
        client.cursor = stale_resume_point(response.body)
    else:
        cursor, events = parse_poll_body(response.body)
        for seq, ts, start, length in events:
            conn.add_down_payload(response.body_offset + start, length)
            ctx.deliver(client, seq, ts, received_ns)
        client.cursor = cursor
    client.ready()
    return response.keep_alive


async def fetch_retrying(ctx: ClientContext, client: ClientState, conn: Connection, path: str) -> Connection | None:
    """``fetch`` on ``conn`` (see ``ClientContext.exchange_retrying``); the connection to keep using, or None."""
    return await ctx.exchange_retrying(client, conn, lambda c: fetch(ctx, client, c, path))


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    """Poll at ``anchor + phase + k * interval`` (open model: a slow poll skips the ticks it missed)."""
    plan = ctx.plan
    interval = round(plan.poll_interval_s * NS_PER_S)
    phase = phase_ns(plan.seed, client.index, interval)
    conn: Connection | None = None
    try:
        # Connect and learn the cursor at the client's ramp-up time, so that with keep-alive the connection
        # exists before the window whatever the client's phase.
        try:
            conn = await ctx.connect(client)
            conn = await fetch_retrying(ctx, client, conn, plan.transport_spec.path)
        except ClientError as exc:
            if conn is not None:
                conn.abort()
                conn = None
            ctx.count_error(exc)
        due = next_due_ns(plan.anchor_ns, phase, interval, time.time_ns())
        while await ctx.sleep_until(due):
            try:
                conn = await ctx.reuse_or_connect(client, conn)
                conn = await fetch_retrying(ctx, client, conn, plan.transport_spec.path)
            except ClientError as exc:
                if conn is not None:
                    conn.abort()
                    conn = None
                if not await ctx.after_failure(client, exc):
                    break
            due = next_due_ns(plan.anchor_ns, phase, interval, max(time.time_ns(), due + 1))
    finally:
        if conn is not None:
            conn.abort()
