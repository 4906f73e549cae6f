"""``GET /``: the page that watches all four transports side by side in a browser (``static/index.html``)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from pushbench import transports

PAGE_PATH = Path(__file__).resolve().parent / "static" / "index.html"
PAGE = web.AppKey("page_html", bytes)


async def handle(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=request.app[PAGE],
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


STYLES_SLOT = b'<script id="transport-styles" type="application/json">{}</script>'


def page_html(template: bytes) -> bytes:
    """The page with the registry's transport labels and chart colours filled in (the same as the report's)."""
    styles = {t.name: {"label": t.label, "colour": t.colour} for t in transports.TRANSPORTS.values()}
    if STYLES_SLOT not in template:
        raise ValueError(f"{PAGE_PATH}: no transport-styles slot to fill")
    filled = STYLES_SLOT.replace(b"{}", json.dumps(styles).replace("</", "<\\/").encode())
    return template.replace(STYLES_SLOT, filled)


def add_routes(app: web.Application) -> None:
    app[PAGE] = page_html(PAGE_PATH.read_bytes())  # read once: a missing file fails at start, not on the first visit
    app.router.add_get("/", handle, name="page", allow_head=False)
