"""Long polling: ``GET /longpoll?after=N`` again as soon as the previous answer arrives."""

from __future__ import annotations

from loadgen.client import ClientContext, ClientState
from loadgen.conn import ClientError, Connection
from loadgen.poll import fetch_retrying

TRANSPORT = "longpoll"


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    conn: Connection | None = None
    try:
        while not ctx.stop.is_set():
            try:
                conn = await ctx.reuse_or_connect(client, conn)
                conn = await fetch_retrying(ctx, client, conn, "/longpoll")
            except ClientError as exc:
                if conn is not None:
                    conn.abort()
                    conn = None
                if not await ctx.after_failure(client, exc):
                    break
    finally:
        if conn is not None:
            conn.abort()
