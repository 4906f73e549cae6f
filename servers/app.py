"""The aiohttp application: one feed, every registered transport, echo and /stats, the same middleware for all."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psutil
from aiohttp import web

from pushbench.config import Sections
from pushbench.transports import TRANSPORTS
from servers import clock, echo, page, security
from servers.fanout import Fanout
from servers.feed import Feed
from servers.state import STATE, ServerState, Stats, json_response, state

log = logging.getLogger("pushbench.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def stats_handler(request: web.Request) -> web.StreamResponse:
    st = state(request)
    return json_response(st.stats.snapshot(st.feed, st.process))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client sees is a short JSON body; no stack trace ever leaves the server."""
    st = state(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            st.stats.rejected[f"http_{exc.status}"] += 1
            body = {"error": exc.reason, "status": exc.status, "path": request.path[:200]}
            return web.json_response(body, status=exc.status, headers=_allow_header(exc))
        if exc.status >= 400:
            st.stats.rejected[f"http_{exc.status}"] += 1
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        st.stats.rejected["http_500"] += 1
        return web.json_response({"error": "internal server error", "status": 500}, status=500)
    return response


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    cfg = request.app[STATE].config.server
    for name, value in cfg.extra_headers.items():
        response.headers[name] = value
    if not cfg.keepalive and not isinstance(response, web.WebSocketResponse):
        response.force_close()
        # This hook runs after aiohttp chose its Connection header, so say it here (RFC 9112 §9.6: a server
        # that closes after the response MUST send "close"); without it clients reuse a closing connection.
        response.headers["Connection"] = "close"


def _feed_ctx(app: web.Application) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run_feed(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[STATE].feed.run(), name="feed")
        yield
        app[STATE].feed.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    del app
    return run_feed


async def _close_feed(app: web.Application) -> None:
    """on_shutdown: held long polls are answered and SSE streams end."""
    app[STATE].feed.close()


def add_transport_routes(app: web.Application) -> None:
    """Each registered transport's routes, from its server module's ``add_routes(app, transport)``."""
    for transport in TRANSPORTS.values():
        importlib.import_module(transport.server_module).add_routes(app, transport)


def make_app(config: Sections) -> web.Application:
    """Build the server for one resolved config (its feed and server sections)."""
    feed_cfg, server_cfg = config.feed, config.server
    app = web.Application(
        middlewares=[errors_middleware, security.guard_middleware], client_max_size=server_cfg.max_body_bytes
    )
    feed = Feed(
        rate_hz=feed_cfg.rate_hz,
        payload_bytes=feed_cfg.payload_bytes,
        burst=feed_cfg.burst,
        history=feed_cfg.history,
        late_threshold_ms=feed_cfg.late_threshold_ms,
        seed=feed_cfg.payload_seed,
    )
    stats = Stats()
    app[STATE] = ServerState(
        config=config, feed=feed, stats=stats, process=psutil.Process(), fanout=Fanout(feed, stats.deliveries)
    )
    security.setup(app, server_cfg)
    add_transport_routes(app)
    echo.add_routes(app)
    clock.add_routes(app)
    page.add_routes(app)
    app.router.add_get("/stats", stats_handler, name="stats", allow_head=False)
    if server_cfg.extra_headers or not server_cfg.keepalive:  # otherwise it has nothing to do on any response
        app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_close_feed)
    app.cleanup_ctx.append(_feed_ctx(app))
    return app


def count_connections(runner: web.AppRunner, stats: Stats) -> None:
    """Count TCP connections at the protocol level (accepted, open, peak), not per request.

    Also where ``server.max_connections`` is enforced (a connection beyond it is answered 503) and where
    requests aiohttp cannot parse get the JSON error body (``servers.security``).
    """
    server = runner.server
    assert server is not None, "call runner.setup() first"
    security.harden_server(runner)
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        stats.connection_made()
        security.note_connection(runner.app, handler, stats.connections_open)
        made(handler, transport)

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        stats.connection_lost()
        security.forget_connection(runner.app, handler)
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
