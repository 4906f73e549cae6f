"""``GET /time``: the server's wall clock, so a load host on another machine can estimate its clock offset.

The answer is read as late as possible before it is sent (``{"server_time_ns": N}``, ns since the Unix epoch,
the clock the feed stamps intended times with); see ``loadgen.clock`` for how clients use it.
"""

from __future__ import annotations

import time

from aiohttp import web

from servers.state import json_response


async def handle(request: web.Request) -> web.StreamResponse:
    return json_response({"server_time_ns": time.time_ns()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/time", handle, name="time", allow_head=False)
