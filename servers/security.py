"""Safe defaults for a server that gets abused by design: Origin checks, CORS, a connection limit, JSON errors.

- The Origin-checked transports (``Transport.origin_checked``: ``/ws``, ``/sse``) refuse a foreign ``Origin`` with 403 (cross-site WebSocket hijacking: a page on
  another site must not open streams with the visitor's network position). Allowed: no Origin at all
  (curl, load generators, other non-browser clients), the server's own origin (Origin's host:port equals
  the Host header), and ``server.allowed_origins``.
- CORS is off unless ``server.cors_origins`` lists origins; then those, and only those, get
  ``Access-Control-Allow-Origin`` (and preflight answers).
- ``server.max_connections``: a connection accepted beyond it gets one 503 JSON answer and is closed.
  Connections are counted at the protocol level (``servers.app.count_connections``), not per request.
- Requests aiohttp cannot even parse (oversized header lines, too many headers, garbage bytes) are answered
  with the same short JSON error body as every other error, never the parser's echo of the input.
- Slow and silent connections (``server.request_header_timeout_s``, ``server.idle_timeout_s``) are closed by the
  connection handler these errors go through (``servers.timeouts``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from pushbench.config import ServerConfig
from pushbench.transports import TRANSPORTS
from servers.state import STATE, Stats, json_error, state
from servers.timeouts import HeadTimeoutHandler, HeadTimeouts

log = logging.getLogger("pushbench.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
CORS_METHODS = "GET, POST, OPTIONS"
CORS_MAX_AGE_S = 600


@dataclass
class Guard:
    """Per-server security settings and the connections accepted beyond ``max_connections``."""

    max_connections: int
    origin_checked_routes: frozenset[str]  # route names of the transports that check Origin
    allowed_origins: frozenset[str]
    cors_origins: frozenset[str]
    over_limit: set[Any] = field(default_factory=set)  # RequestHandlers to answer 503 and close


GUARD = web.AppKey("guard", Guard)


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, without a trailing slash, as browsers serialize it."""
    return origin.strip().rstrip("/").lower()


def host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of ``host[:port]``, the scheme's default port when none is given; None when unparsable."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else DEFAULT_PORTS.get(scheme, 80)


def is_same_origin(origin: str, host_header: str | None) -> bool:
    """True when the Origin names the host:port the request was sent to (the Host header)."""
    if not host_header:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return False
    return host_port(parts.netloc, parts.scheme) == host_port(host_header, parts.scheme)


def origin_allowed(origin: str | None, host_header: str | None, allowed: frozenset[str]) -> bool:
    """The Origin rule of the streaming endpoints: none, the same origin, or one of ``server.allowed_origins``."""
    if origin is None:
        return True
    return "*" in allowed or normalize_origin(origin) in allowed or is_same_origin(origin, host_header)


def cors_allow_origin(origin: str | None, cors_origins: frozenset[str]) -> str | None:
    """The Access-Control-Allow-Origin value for this Origin, or None (CORS off or origin not listed)."""
    if origin is None or not cors_origins:
        return None
    if "*" in cors_origins:
        return "*"
    return origin if normalize_origin(origin) in cors_origins else None


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Connection limit first, then CORS preflight, then the Origin check of the streaming endpoints."""
    guard = request.app[GUARD]
    stats = state(request).stats
    if request.protocol in guard.over_limit:
        stats.rejected["max_connections"] += 1
        exc = json_error(
            503,
            f"server is at its limit of {guard.max_connections} open connections (server.max_connections); retry later",
        )
        exc.force_close()
        raise exc
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        allow = cors_allow_origin(origin, guard.cors_origins)
        route_exc = request.match_info.http_exception
        if allow is not None and (route_exc is None or route_exc.status == 405):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": CORS_METHODS,
                    "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ""),
                    "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                },
            )
    if request.match_info.route.name in guard.origin_checked_routes and not origin_allowed(
        origin, request.host, guard.allowed_origins
    ):
        stats.rejected["foreign_origin"] += 1
        raise json_error(
            403,
            f"Origin {(origin or '')[:100]!r} may not open {request.path}: only the server's own origin "
            "or server.allowed_origins",
        )
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = state(request).config.server.max_body_bytes
        raise json_error(413, f"request body larger than {limit} bytes (server.max_body_bytes)") from None


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers for listed origins only (errors included, so scripts can read them)."""
    if isinstance(response, web.WebSocketResponse):
        return
    allow = cors_allow_origin(request.headers.get("Origin"), request.app[GUARD].cors_origins)
    if allow is not None:
        response.headers["Access-Control-Allow-Origin"] = allow
        if allow != "*":
            response.headers.add("Vary", "Origin")


def setup(app: web.Application, server_cfg: ServerConfig) -> None:
    """Install the guard on an app (the middleware itself is listed in ``make_app``)."""
    app[GUARD] = Guard(
        max_connections=server_cfg.max_connections,
        origin_checked_routes=frozenset(t.name for t in TRANSPORTS.values() if t.origin_checked),
        allowed_origins=frozenset(map(normalize_origin, server_cfg.allowed_origins)),
        cors_origins=frozenset(map(normalize_origin, server_cfg.cors_origins)),
    )
    if server_cfg.cors_origins:  # CORS off: no header to add, so no hook to run on every response
        app.on_response_prepare.append(add_cors_headers)


# --- errors aiohttp's HTTP parser raises before any handler or middleware runs ---------------------------


def protocol_error(status: int, exc: BaseException | None) -> tuple[int, str]:
    """The status and a short message for a request that could not be parsed (never the raw input)."""
    if isinstance(exc, LineTooLong):
        line, limit = exc.args[0], exc.args[1]
        # aiohttp's C parser hands the URL over as a bytearray, header values as bytes.
        if isinstance(line, bytearray) or (isinstance(line, bytes | str) and line[:1] in (b"/", "/")):
            return 414, f"request line longer than {limit} bytes"
        return 431, f"a header line is longer than {limit} bytes"
    if isinstance(exc, BadHttpMessage):
        text = exc.message if isinstance(exc.message, str) else ""
        if "Too many headers" in text:
            return 431, "too many header fields"
        first_line = text.strip().splitlines()[0].rstrip(":") if text.strip() else "malformed HTTP request"
        return exc.code or 400, first_line[:120]
    if status == 500:
        return 500, "internal server error"
    return status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"


class JsonErrorRequestHandler(HeadTimeoutHandler):
    """aiohttp's connection handler, answering unparsable requests with the project's JSON error body (and
    closing slow and silent connections: ``servers.timeouts``)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and refuses when a response was sent
        status, text = protocol_error(status, exc)
        stats: Stats | None = getattr(self._manager, "pushbench_stats", None)
        if stats is not None:
            stats.rejected[f"http_{status}"] += 1
        resp = web.Response(
            status=status,
            text=json.dumps({"error": text, "status": status}),
            content_type="application/json",
        )
        resp.force_close()
        return resp


class JsonErrorServer(web.Server):
    """``web.Server`` that builds ``JsonErrorRequestHandler`` connections."""

    pushbench_stats: Stats | None = None
    pushbench_timeouts: HeadTimeouts | None = None

    def __call__(self) -> RequestHandler:
        kwargs = self._kwargs
        if self.pushbench_timeouts is not None:
            kwargs = {**kwargs, "keepalive_timeout": self.pushbench_timeouts.aiohttp_keepalive_s}
        return JsonErrorRequestHandler(self, loop=self._loop, **kwargs)


def harden_server(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: JSON answers for parse errors and the request-head and idle timeouts (the runner
    built a plain ``web.Server``)."""
    server = runner.server
    assert server is not None, "call runner.setup() first"
    server.__class__ = JsonErrorServer
    st = runner.app[STATE]
    server.pushbench_stats = st.stats  # type: ignore[attr-defined]
    server.pushbench_timeouts = HeadTimeouts(  # type: ignore[attr-defined]
        request_header_s=st.config.server.request_header_timeout_s, idle_s=st.config.server.idle_timeout_s
    )


def note_connection(app: web.Application, handler: Any, connections_open: int) -> None:
    """Called as each connection is made: one beyond ``max_connections`` is marked for a 503."""
    guard = app.get(GUARD)
    if guard is not None and connections_open > guard.max_connections:
        guard.over_limit.add(handler)


def forget_connection(app: web.Application, handler: Any) -> None:
    guard = app.get(GUARD)
    if guard is not None:
        guard.over_limit.discard(handler)
