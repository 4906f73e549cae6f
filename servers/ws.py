"""WebSocket: ``GET /ws`` pushes each event as one text frame and echoes every text frame a client sends.

``?after=N`` resumes from history; ``?mode=echo`` is echo only (no feed), for conformance test suites.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSCloseCode, WSMsgType, web

from servers.feed import FeedClosed, StaleCursor
from servers.state import check_future_cursor, parse_cursor, stale_cursor_error, state

TRANSPORT = "ws"
SOCKETS = web.AppKey("websockets", set)  # the open WebSocketResponses, closed with 1001 on shutdown


async def _push(ws: web.WebSocketResponse, request: web.Request, after: int) -> None:
    st = state(request)
    try:
        async for event in st.feed.follow(after):
            if event is None or ws.closed:
                continue
            await ws.send_frame(event.body, WSMsgType.TEXT)
            st.stats.deliveries[TRANSPORT] += 1
    except StaleCursor:
        st.stats.slow_client_drops += 1
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"fell behind the history; resume with ?after")
    except (FeedClosed, ConnectionResetError):
        pass


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    cfg = st.config["server"]
    st.stats.requests[TRANSPORT] += 1
    echo_only = request.query.get("mode") == "echo"
    after = parse_cursor(request)
    if not echo_only:
        if after is None:
            after = st.feed.latest_seq
        check_future_cursor(request, after)
        try:
            st.feed.events_after(after)
        except StaleCursor as exc:
            raise stale_cursor_error(request, exc) from None
    ws = web.WebSocketResponse(
        compress=cfg["ws_compress"],
        max_msg_size=cfg["max_ws_message_bytes"],
        heartbeat=cfg["ws_heartbeat_s"] or None,
    )
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    pusher = None if echo_only or after is None else asyncio.create_task(_push(ws, request, after))
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
                st.stats.echoes["ws"] += 1
            elif msg.type is WSMsgType.BINARY:
                if echo_only:
                    await ws.send_bytes(msg.data)
                    st.stats.echoes["ws"] += 1
                else:
                    st.stats.rejected["ws_binary"] += 1
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames are not accepted")
    finally:
        request.app[SOCKETS].discard(ws)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
    return ws


async def close_all(app: web.Application) -> None:
    """on_shutdown: every WebSocket gets 1001 Going Away."""
    sockets: set[web.WebSocketResponse] = app[SOCKETS]
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in list(sockets)),
        return_exceptions=True,
    )


def add_routes(app: web.Application) -> None:
    app[SOCKETS] = set()
    app.on_shutdown.append(close_all)
    app.router.add_get("/ws", handle, name=TRANSPORT, allow_head=False)
