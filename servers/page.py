"""``GET /``: the page that watches all four transports side by side in a browser (``static/index.html``)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

PAGE_PATH = Path(__file__).resolve().parent / "static" / "index.html"
PAGE = web.AppKey("page_html", bytes)


async def handle(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=request.app[PAGE],
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    app[PAGE] = PAGE_PATH.read_bytes()  # read once: a missing file fails at start, not on the first visit
    app.router.add_get("/", handle, name="page", allow_head=False)
