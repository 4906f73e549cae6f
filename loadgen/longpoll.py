"""Long polling: ``GET /longpoll?after=N`` again as soon as the previous answer arrives (by callbacks while the
connection is healthy: ``loadgen.poll.CallbackPolls``)."""

from __future__ import annotations

from loadgen.client import ClientContext, ClientState
from loadgen.conn import Connection
from loadgen.poll import CallbackPolls, fetch_or_recover


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    """``ClientContext.run_sessions`` with keep-alive, one long poll per session, in the callbacks meanwhile."""
    path = ctx.plan.transport_spec.path
    conn: Connection | None = None
    in_flight = False  # the callbacks left an exchange on ``conn`` to complete here
    try:
        while in_flight or not ctx.stop.is_set():
            conn, go_on = await fetch_or_recover(ctx, client, conn, path, in_flight)
            if not go_on:
                break
            in_flight = conn is not None and await CallbackPolls(ctx, client, conn, ctx.encoded_get(path), None).run()
    finally:
        if conn is not None:
            conn.abort()
