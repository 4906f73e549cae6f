"""Long polling: ``GET /longpoll?after=N`` is held until an event after N exists or the timeout passes."""

from __future__ import annotations

from aiohttp import web

from servers.feed import StaleCursor
from servers.poll import respond
from servers.state import check_future_cursor, parse_cursor, stale_cursor_error, state

TRANSPORT = "longpoll"


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    st.stats.requests[TRANSPORT] += 1
    after = parse_cursor(request)
    if after is None:
        return respond(request, None, [])
    check_future_cursor(request, after)
    await st.feed.wait_after(after, st.config["server"]["longpoll_timeout_s"])
    try:
        events = st.feed.events_after(after)
    except StaleCursor as exc:
        raise stale_cursor_error(request, exc) from None
    return respond(request, after, events)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/longpoll", handle, name=TRANSPORT, allow_head=False)
