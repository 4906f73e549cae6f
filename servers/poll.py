"""Short polling: ``GET /poll?after=N`` answers at once with the events after N."""

from __future__ import annotations

from aiohttp import web

from servers.feed import Event, StaleCursor
from servers.state import check_future_cursor, parse_cursor, stale_cursor_error, state

TRANSPORT = "poll"


def poll_body(cursor: int, events: list[Event]) -> bytes:
    """``{"cursor": C, "events": [...]}`` built from the events' shared serialized bytes."""
    return b'{"cursor":%d,"events":[%s]}' % (cursor, b",".join(e.body for e in events))


def respond(request: web.Request, after: int | None, events: list[Event]) -> web.Response:
    """The poll/longpoll answer: C is the last seq returned, or N if none (latest seq when no cursor)."""
    st = state(request)
    cursor = events[-1].seq if events else (st.feed.latest_seq if after is None else after)
    st.stats.deliveries[request.match_info.route.name or TRANSPORT] += len(events)
    return web.Response(body=poll_body(cursor, events), content_type="application/json")


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    st.stats.requests[TRANSPORT] += 1
    after = parse_cursor(request)
    if after is None:
        return respond(request, None, [])
    check_future_cursor(request, after)
    try:
        events = st.feed.events_after(after)
    except StaleCursor as exc:
        raise stale_cursor_error(request, exc) from None
    return respond(request, after, events)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/poll", handle, name=TRANSPORT, allow_head=False)
