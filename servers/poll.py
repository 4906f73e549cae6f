"""Short polling: ``GET /poll?after=N`` answers at once with the events after N."""

from __future__ import annotations

from aiohttp import web

from pushbench.transports import Transport
from servers.feed import Event
from servers.state import check_future_cursor, events_after, parse_cursor, state


def poll_body(cursor: int, events: list[Event]) -> bytes:
    """``{"cursor": C, "events": [...]}`` built from the events' shared serialized bytes."""
    return b'{"cursor":%d,"events":[%s]}' % (cursor, b",".join(e.body for e in events))


def respond(request: web.Request, after: int | None, events: list[Event]) -> web.Response:
    """The poll/longpoll answer: C is the last seq returned, or N if none (latest seq when no cursor)."""
    st = state(request)
    cursor = events[-1].seq if events else (st.feed.latest_seq if after is None else after)
    st.stats.deliveries[route_name(request)] += len(events)
    return web.Response(body=poll_body(cursor, events), content_type="application/json")


def route_name(request: web.Request) -> str:
    """The transport a request came in on: its route is named after it (the key of its /stats counters)."""
    return request.match_info.route.name or request.path


async def handle(request: web.Request) -> web.StreamResponse:
    state(request).stats.requests[route_name(request)] += 1
    after = parse_cursor(request)
    if after is None:
        return respond(request, None, [])
    check_future_cursor(request, after)
    return respond(request, after, events_after(request, after))


def add_routes(app: web.Application, transport: Transport) -> None:
    app.router.add_get(transport.path, handle, name=transport.name, allow_head=False)
