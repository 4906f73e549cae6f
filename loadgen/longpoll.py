"""Long polling: ``GET /longpoll?after=N`` again as soon as the previous answer arrives."""

from __future__ import annotations

from loadgen.client import ClientContext, ClientState
from loadgen.conn import Connection
from loadgen.poll import fetch_retrying


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    async def session(conn: Connection) -> Connection | None:
        return await fetch_retrying(ctx, client, conn, ctx.plan.transport_spec.path)

    await ctx.run_sessions(client, session, keep_alive=True)
