"""Server-Sent Events: ``GET /sse`` streams ``id:``/``data:`` records; resumes after Last-Event-ID or ?after=N."""

from __future__ import annotations

from aiohttp import web

from servers.feed import Event, FeedClosed, StaleCursor
from servers.state import check_future_cursor, json_error, parse_cursor, stale_cursor_error, state

TRANSPORT = "sse"
HEARTBEAT = b": keep-alive\n\n"


def sse_record(event: Event) -> bytes:
    """One SSE record: ``id: <seq>`` and ``data: <event JSON>`` lines and a blank line."""
    return b"id: %d\ndata: %s\n\n" % (event.seq, event.body)


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
    st.stats.requests[TRANSPORT] += 1
    after = resume_point(request)
    if after is None:
        after = st.feed.latest_seq
    check_future_cursor(request, after)
    try:
        st.feed.events_after(after)  # refuse a stale resume point before the stream starts
    except StaleCursor as exc:
        raise stale_cursor_error(request, exc) from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    heartbeat = st.config["server"]["sse_heartbeat_s"] or None
    try:
        async for event in st.feed.follow(after, heartbeat):
            if event is None:
                await response.write(HEARTBEAT)
                continue
            await response.write(sse_record(event))
            st.stats.deliveries[TRANSPORT] += 1
    except StaleCursor:
        st.stats.slow_client_drops += 1  # fell out of history while connected: drop; it resumes and learns
    except (FeedClosed, ConnectionResetError):
        pass
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sse", handle, name=TRANSPORT, allow_head=False)
