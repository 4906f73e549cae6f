"""The echo scenario over HTTP: ``POST /echo`` every ``send_interval_s`` (poll, longpoll and sse cells).

Each client sends message ``k`` at its intended time ``anchor + phase + k * interval`` and measures the
round trip from that intended time, so a slow answer delays the next send but still shows in the latency
(coordinated omission). Message ``k`` carries seq ``k + 1``.
"""

from __future__ import annotations

import functools
import json
import random
import string
import time
from collections.abc import AsyncIterator

from loadgen.client import ClientContext, ClientState, Plan, event_fields
from loadgen.conn import ClientError, Connection, ErrorKind
from loadgen.metrics import next_due_ns, phase_ns
from pushbench.units import NS_PER_S


@functools.lru_cache(maxsize=4096)
def _echo_data(client: int, payload_bytes: int) -> str:
    return "".join(random.Random(client).choices(string.ascii_letters + string.digits, k=payload_bytes))


def echo_message(client: ClientState, seq: int, intended_ns: int, payload_bytes: int) -> bytes:
    """The message bytes: the same compact JSON shape as a feed event, ``data`` of ``payload_bytes`` characters."""
    data = _echo_data(client.index, payload_bytes)
    return json.dumps({"seq": seq, "ts": intended_ns, "data": data}, separators=(",", ":")).encode()


def echo_due(plan: Plan, client: int) -> tuple[int, int]:
    """(phase, interval) of a client's send schedule, in ns."""
    interval = round(plan.send_interval_s * NS_PER_S)
    return phase_ns(plan.seed, client, interval), interval


async def echo_schedule(ctx: ClientContext, client: ClientState) -> AsyncIterator[tuple[int, int]]:
    """Yield (seq, intended_ns) at each send time until the cell stops; late sends go at once."""
    phase, interval = echo_due(ctx.plan, client.index)
    due = next_due_ns(ctx.plan.anchor_ns, phase, interval, time.time_ns())
    while await ctx.sleep_until(due, precise=True):
        seq = (due - ctx.plan.anchor_ns - phase) // interval + 1
        yield seq, due
        due += interval


async def post_echo(ctx: ClientContext, client: ClientState, seq: int, body: bytes, conn: Connection) -> bool:
    """POST message ``seq`` to /echo on ``conn`` and deliver the reply; the response's keep-alive."""
    headers = ctx.plan.profile.post_headers(ctx.plan.hostport, "application/json", len(body), ctx.plan.scheme)
    response = await conn.request("POST", "/echo", headers, body, body_is_payload=True)
    received_ns = time.time_ns()
    if response.status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{response.status} for POST /echo")
    got_seq, got_ts = event_fields(response.body)
    if response.body != body:
        raise ClientError(ErrorKind.PROTOCOL, f"echo of message {seq} differs from what was sent")
    conn.add_down_payload(response.body_offset, len(response.body))
    ctx.deliver(client, got_seq, got_ts, received_ns)
    client.ready()
    return response.keep_alive


async def run_echo(ctx: ClientContext, client: ClientState) -> None:
    conn: Connection | None = None
    try:
        try:
            conn = await ctx.connect(client)  # at ramp-up time, before the window, whatever the phase
        except ClientError as exc:
            ctx.count_error(exc)
        async for seq, intended_ns in echo_schedule(ctx, client):
            body = echo_message(client, seq, intended_ns, ctx.plan.payload_bytes)
            try:
                conn = await ctx.reuse_or_connect(client, conn)
                conn = await ctx.exchange_retrying(client, conn, functools.partial(post_echo, ctx, client, seq, body))
            except ClientError as exc:
                if conn is not None:
                    conn.abort()
                    conn = None
                if not await ctx.after_failure(client, exc):
                    break
    finally:
        if conn is not None:
            conn.abort()
