"""WebSocket: ``GET /ws`` pushes each event as one text frame and echoes every text frame a client sends.

``?after=N`` resumes from history; ``?mode=echo`` is echo only (no feed), for conformance test suites.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from pushbench.transports import Transport
from pushbench.units import ws_frame_header_bytes
from servers.fanout import Subscriber, ws_text_frame
from servers.feed import Event, FeedClosed, StaleCursor
from servers.limits import SlowClient, bound_send_buffer, drop, is_valid_close_code, make_room
from servers.poll import route_name
from servers.state import check_future_cursor, events_after, parse_cursor, state
from servers.timeouts import stream_owns_connection

MAX_FRAME_HEADER_BYTES = ws_frame_header_bytes(1 << 16, masked=False)  # the longest server frame header: 10 bytes
SOCKETS = web.AppKey("websockets", set)  # the open WebSocketResponses, closed with 1001 on shutdown


def frame_event(event: Event) -> bytes:
    return ws_text_frame(event.body)


class PushWebSocket(web.WebSocketResponse):
    """A WebSocketResponse that leaves the broadcast before its close frame goes out, so no frame follows it.

    Every close that sends a close frame goes through ``close()`` (aiohttp's own, on bad input, too); a close
    without one (a pong timeout) closes the transport at once, which the broadcast checks before each write.
    """

    leave: Callable[[], None] | None = None

    async def close(self, *args: Any, **kwargs: Any) -> bool:
        if self.leave is not None:
            self.leave()
        return await super().close(*args, **kwargs)


async def _push(ws: PushWebSocket, request: web.Request, after: int) -> None:
    st = state(request)
    name = route_name(request)
    send_buffer_bytes = st.config.server.send_buffer_bytes
    transport = request.transport
    # permessage-deflate compresses with each connection's own context: no shared bytes, no broadcast
    channel = None if ws.compress else st.fanout.channel("ws", name, frame_event, send_buffer_bytes)
    sub = Subscriber(transport, after, send_buffer_bytes)
    if channel is not None:
        ws.leave = lambda: st.fanout.leave(channel, sub)
    try:
        while not ws.closed:
            events = st.feed.events_after(sub.cursor)  # catching up on its own (resumed, or fell behind)
            for event in events:
                if ws.closed:
                    break
                await make_room(transport, len(event.body) + MAX_FRAME_HEADER_BYTES, send_buffer_bytes)
                await ws.send_frame(event.body, WSMsgType.TEXT)
                st.stats.deliveries[name] += 1
                sub.cursor = event.seq
            if events:
                continue
            if st.feed.closed:
                raise FeedClosed()
            if channel is None:
                await st.feed.wait_after(sub.cursor)
            else:
                await st.fanout.join(channel, sub)  # caught up: in the broadcast
    except SlowClient:
        st.stats.slow_client_drops += 1  # stopped reading: cut it; it resumes with ?after when it can
        drop(transport)
    except StaleCursor:
        st.stats.slow_client_drops += 1
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"fell behind the history; resume with ?after")
    except (FeedClosed, ConnectionResetError):
        pass


def count_close(request: web.Request, code: int) -> None:
    """Count a connection the server closed because of what the client sent, by close code name."""
    try:
        name = WSCloseCode(code).name.lower()
    except ValueError:
        name = str(code)
    state(request).stats.rejected[f"ws_{name}"] += 1


async def receive_loop(ws: web.WebSocketResponse, request: web.Request, echo_only: bool) -> None:
    """Echo text frames (and binary ones in echo mode) until the connection closes, failing it on bad input.

    aiohttp closes with 1009 (too big), 1007 (invalid UTF-8) and 1002 (protocol errors) by itself; the
    close handshake is done here (``autoclose=False``) because aiohttp answers a close frame carrying a
    reserved code such as 1006 with 1000, where RFC 6455 §7.4 wants 1002 (Autobahn case 7.9.5).
    """
    st = state(request)
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
            st.stats.echoes["ws"] += 1
        elif msg.type is WSMsgType.BINARY:
            if echo_only:
                await ws.send_bytes(msg.data)
                st.stats.echoes["ws"] += 1
            else:
                count_close(request, WSCloseCode.UNSUPPORTED_DATA)
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames are not accepted")
                return
        elif msg.type is WSMsgType.CLOSE:
            code = int(msg.data)
            if is_valid_close_code(code):
                await ws.close(code=code or WSCloseCode.OK)  # echo the peer's code (RFC 6455 §5.5.1)
            else:
                count_close(request, WSCloseCode.PROTOCOL_ERROR)
                await ws.close(code=WSCloseCode.PROTOCOL_ERROR, message=b"invalid close code %d" % code)
            return
        elif msg.type is WSMsgType.ERROR:
            if isinstance(msg.data, asyncio.TimeoutError):
                st.stats.rejected["ws_pong_timeout"] += 1  # heartbeat: the peer is dead or gone
            elif isinstance(msg.data, WebSocketError):
                count_close(request, msg.data.code)  # receive() already closed with this code
            return
        else:  # CLOSING (closed by the pusher or at shutdown) or CLOSED (connection lost)
            return


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    cfg = st.config.server
    st.stats.requests[route_name(request)] += 1
    echo_only = request.query.get("mode") == "echo"
    after = parse_cursor(request)
    if not echo_only:
        if after is None:
            after = st.feed.latest_seq
        check_future_cursor(request, after)
        events_after(request, after)  # refuse a stale resume point before the handshake
    ws = PushWebSocket(
        compress=cfg.ws_compress,
        max_msg_size=cfg.max_ws_message_bytes,
        heartbeat=cfg.ws_heartbeat_s or None,
        autoclose=False,
    )
    await ws.prepare(request)
    stream_owns_connection(request)
    bound_send_buffer(request.transport, cfg.send_buffer_bytes)
    request.app[SOCKETS].add(ws)
    pusher = None if echo_only or after is None else asyncio.create_task(_push(ws, request, after))
    try:
        await receive_loop(ws, request, echo_only)
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


def add_routes(app: web.Application, transport: Transport) -> None:
    if SOCKETS not in app:
        app[SOCKETS] = set()
        app.on_shutdown.append(close_all)
    app.router.add_get(transport.path, handle, name=transport.name, allow_head=False)
