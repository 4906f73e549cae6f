"""Long polling: ``GET /longpoll?after=N`` again as soon as the previous answer arrives (by callbacks while the
connection is healthy: ``loadgen.poll.CallbackPolls``)."""

from __future__ import annotations

from loadgen.client import ClientContext, ClientState
from loadgen.conn import ClientError, Connection
from loadgen.poll import CallbackPolls, fetch_retrying


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    """``ClientContext.run_sessions`` with keep-alive, one long poll per session, in the callbacks meanwhile."""
    path = ctx.plan.transport_spec.path
    conn: Connection | None = None
    in_flight = False  # the callbacks left an exchange on ``conn`` to complete here
    try:
        while in_flight or not ctx.stop.is_set():
            try:
                if in_flight:
                    assert conn is not None
                    conn = await fetch_retrying(ctx, client, conn, path, resume=True)
                else:
                    conn = await ctx.reuse_or_connect(client, conn)
                    conn = await fetch_retrying(ctx, client, conn, path)
            except ClientError as exc:
                in_flight = False
                if conn is not None:
                    conn.abort()
                    conn = None
                if not await ctx.after_failure(client, exc):
                    break
                continue
            in_flight = conn is not None and await CallbackPolls(ctx, client, conn, ctx.encoded_get(path), None).run()
    finally:
        if conn is not None:
            conn.abort()
