"""The transports pushbench measures: one record each, the one place a transport is described.

Everything that differs by transport derives from ``TRANSPORTS``: the config's ``load.transport`` choices, the
server's routes and Origin check, the ``/stats`` counters, the load generator's client per transport, and the
facts the analysis needs (label, chart style, polls or pushes), which the load generator writes into
``run.json`` (``analysis/`` never imports this package).

Adding a transport is one ``register(Transport(...))`` call here (or in a plugin module), plus its two modules:
``servers/<name>.py`` with ``add_routes(app, transport)`` and ``loadgen/<name>.py`` with ``run_feed(ctx, client)``
(and ``run_echo`` if it echoes other than by ``POST /echo``). Another registry of the same shape (say, the
network *stacks* a cell runs over) is a frozen record and a ``pushbench.registry.Registry`` of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pushbench.registry import Registry


@dataclass(frozen=True)
class Transport:
    """One transport: how it is named, served, driven, counted and drawn."""

    name: str  # the value of load.transport, the route name, the key of /stats deliveries and requests
    label: str  # in prose and legends: "short polling"
    short: str  # on crowded chart axes: "poll"
    path: str  # the server's route for the feed: "/poll"
    server_module: str  # defines add_routes(app, transport)
    client_module: str  # defines run_feed(ctx, client), optionally run_echo(ctx, client)
    colour: str  # chart colour (Okabe-Ito palette, colour-blind safe)
    marker: str  # matplotlib marker
    marker_size: float  # bigger markers for the transports drawn first, so overlapping points stay visible
    polls: bool  # the client asks on its own schedule (short polling); False: the server answers when events exist
    holds_requests: bool  # the server holds an HTTP request open until an event (long polling)
    streams: bool  # one connection per client for the whole session (SSE, WebSocket)
    origin_checked: bool  # a cross-site page must not open it (server.allowed_origins applies)
    handshake: Literal["fetch", "websocket"]  # the request headers a client sends to subscribe
    echo_key: str  # the /stats ``echoes`` counter its echo scenario uses: "http" (POST /echo) or "ws"

    @property
    def pushes(self) -> bool:
        """The server sends each event as soon as it is published (long polling, SSE, WebSocket)."""
        return not self.polls

    def describe(self) -> dict[str, Any]:
        """What results readers need of this transport (written into run.json)."""
        return {**asdict(self), "pushes": self.pushes}


TRANSPORTS: Registry[Transport] = Registry("transport")
register = TRANSPORTS.register
registered = TRANSPORTS.registered
choices = TRANSPORTS.choices
describe = TRANSPORTS.describe


def echo_keys() -> tuple[str, ...]:
    """The /stats ``echoes`` counters, one per distinct echo path."""
    return tuple(dict.fromkeys(t.echo_key for t in TRANSPORTS.values()))


POLL = register(
    Transport(
        name="poll", label="short polling", short="poll", path="/poll",
        server_module="servers.poll", client_module="loadgen.poll",
        colour="#D55E00", marker="s", marker_size=9.0,
        polls=True, holds_requests=False, streams=False, origin_checked=False, handshake="fetch", echo_key="http",
    )
)  # fmt: skip
LONGPOLL = register(
    Transport(
        name="longpoll", label="long polling", short="long poll", path="/longpoll",
        server_module="servers.longpoll", client_module="loadgen.longpoll",
        colour="#E69F00", marker="D", marker_size=7.0,
        polls=False, holds_requests=True, streams=False, origin_checked=False, handshake="fetch", echo_key="http",
    )
)  # fmt: skip
SSE = register(
    Transport(
        name="sse", label="SSE", short="SSE", path="/sse",
        server_module="servers.sse", client_module="loadgen.sse",
        colour="#009E73", marker="^", marker_size=6.5,
        polls=False, holds_requests=False, streams=True, origin_checked=True, handshake="fetch", echo_key="http",
    )
)  # fmt: skip
WS = register(
    Transport(
        name="ws", label="WebSocket", short="WS", path="/ws",
        server_module="servers.ws", client_module="loadgen.ws",
        colour="#0072B2", marker="o", marker_size=4.5,
        polls=False, holds_requests=False, streams=True, origin_checked=True, handshake="websocket", echo_key="ws",
    )
)  # fmt: skip
