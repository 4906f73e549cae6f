"""Full duplex for the echo scenario over HTTP: ``POST /echo`` answers with the request body."""

from __future__ import annotations

from aiohttp import web

from servers.state import state


async def handle(request: web.Request) -> web.StreamResponse:
    st = state(request)
    body = await request.read()  # bounded by the app's client_max_size (413 beyond)
    st.stats.echoes["http"] += 1
    return web.Response(body=body, content_type=request.content_type or "application/octet-stream")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/echo", handle, name="echo")
