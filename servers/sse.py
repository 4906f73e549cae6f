"""Server-Sent Events: ``GET /sse`` streams ``id:``/``data:`` records; resumes after Last-Event-ID or ?after=N."""

from __future__ import annotations

from aiohttp import web

from pushbench.transports import Transport
from servers.fanout import Subscriber, http_chunk
from servers.feed import Event, FeedClosed, StaleCursor
from servers.limits import SlowClient, bound_send_buffer, drop, make_room
from servers.poll import route_name
from servers.state import check_future_cursor, events_after, json_error, parse_cursor, state
from servers.timeouts import stream_owns_connection

HEARTBEAT = b": keep-alive\n\n"


def sse_record(event: Event) -> bytes:
    """One SSE record: ``id: <seq>`` and ``data: <event JSON>`` lines and a blank line."""
    return b"id: %d\ndata: %s\n\n" % (event.seq, event.body)


def sse_chunk(event: Event) -> bytes:
    return http_chunk(sse_record(event))


def resume_point(request: web.Request) -> int | None:
    """Last-Event-ID (what EventSource sends on reconnect) wins over ?after=N."""
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        if not header.isdigit() or len(header) > 18:
            state(request).stats.rejected["bad_cursor"] += 1
            raise json_error(400, f"Last-Event-ID must be a non-negative integer, got {header[:40]!r}")
        return int(header)
    return parse_cursor(request)


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    name = route_name(request)
    st.stats.requests[name] += 1
    after = resume_point(request)
    if after is None:
        after = st.feed.latest_seq
    check_future_cursor(request, after)
    events_after(request, after)  # refuse a stale resume point before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    stream_owns_connection(request)
    heartbeat = st.config.server.sse_heartbeat_s or None
    send_buffer_bytes = st.config.server.send_buffer_bytes
    transport = request.transport
    bound_send_buffer(transport, send_buffer_bytes)
    if "chunked" in response.headers.get("Transfer-Encoding", ""):  # aiohttp frames each write as a chunk (HTTP/1.1)
        channel = st.fanout.channel("sse-chunked", name, sse_chunk, send_buffer_bytes, heartbeat)
    else:
        channel = st.fanout.channel("sse", name, sse_record, send_buffer_bytes, heartbeat)
    sub = Subscriber(transport, after, send_buffer_bytes)
    try:
        while True:
            events = st.feed.events_after(sub.cursor)  # catching up on its own (resumed, or fell behind)
            for event in events:
                record = sse_record(event)
                await make_room(transport, len(record), send_buffer_bytes)
                await response.write(record)
                st.stats.deliveries[name] += 1
                sub.cursor = event.seq
            if events:
                continue
            if st.feed.closed:
                raise FeedClosed()
            if not await st.fanout.join(channel, sub):  # caught up: in the broadcast
                await make_room(transport, len(HEARTBEAT), send_buffer_bytes)
                await response.write(HEARTBEAT)
    except SlowClient:
        st.stats.slow_client_drops += 1  # stopped reading: cut it; it resumes with Last-Event-ID when it can
        drop(transport)
    except StaleCursor:
        st.stats.slow_client_drops += 1  # fell out of history while connected: drop; it resumes and learns
    except (FeedClosed, ConnectionResetError):
        pass
    return response


def add_routes(app: web.Application, transport: Transport) -> None:
    app.router.add_get(transport.path, handle, name=transport.name, allow_head=False)
