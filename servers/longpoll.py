"""Long polling: ``GET /longpoll?after=N`` is held until an event after N exists or the timeout passes."""

from __future__ import annotations

from aiohttp import web

from pushbench.transports import Transport
from servers.poll import add_shared_answers, respond, route_name
from servers.state import check_future_cursor, events_after, parse_cursor, state


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    st.stats.requests[route_name(request)] += 1
    after = parse_cursor(request)
    if after is None:
        return respond(request, None, [])
    check_future_cursor(request, after)
    await st.feed.wait_after(after, st.config.server.longpoll_timeout_s)
    return respond(request, after, events_after(request, after))


def add_routes(app: web.Application, transport: Transport) -> None:
    add_shared_answers(app)
    app.router.add_get(transport.path, handle, name=transport.name, allow_head=False)
