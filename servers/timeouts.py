"""Slow and silent clients: a request head that never finishes, or no request at all, does not hold a connection.

The "slowloris" attack opens connections and sends a request head one header line at a time, never the blank
line that ends it; each one holds a socket and a slot under ``server.max_connections`` for as long as the server
waits. The rules below are HAProxy's (``timeout http-request`` and ``timeout http-keep-alive``) and nginx's
(``client_header_timeout``, ``keepalive_timeout``):

- ``server.request_header_timeout_s``: the complete head of a connection's first request is due that long after
  the connection opened; on a kept-alive connection the head of a later request is due that long after its first
  byte. Beyond: ``408`` with a JSON body (when the client sent part of a request, so it is waiting for an answer)
  and the connection is half-closed (the rest of the head is read and dropped for ``LINGER_S``, so no reset
  destroys the answer), then closed; counted in /stats ``rejected.request_timeout``.
- ``server.idle_timeout_s``: a connection that has not sent a single byte of a request that long after it opened
  or after its previous response ended is closed without an answer (nothing was asked); counted in
  ``rejected.idle_timeout``. A new connection that stays silent is closed by whichever of the two comes first.

Both clocks run only while aiohttp waits for a request: once a head is complete the handler owns the connection,
so held long polls, SSE streams and WebSockets are not affected (their own heartbeats and timeouts apply), and a
request body is not timed here. aiohttp's own keep-alive timer (``keepalive_timeout``, which closes a waiting
connection silently and uncounted) is pushed beyond both so that these rules always decide first.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

REQUEST_TIMEOUT = "request_timeout"  # /stats rejected kinds
IDLE_TIMEOUT = "idle_timeout"
LINGER_S = 2.0  # after a 408: how long the rest of an unfinished head is read and dropped before the close
# aiohttp's keep-alive timer is set this far beyond both timeouts, as a backstop that never fires first.
AIOHTTP_BACKSTOP_MARGIN_S = 1.0


@dataclass(frozen=True)
class HeadTimeouts:
    """``server.request_header_timeout_s`` and ``server.idle_timeout_s``."""

    request_header_s: float
    idle_s: float

    @property
    def aiohttp_keepalive_s(self) -> float:
        """aiohttp's ``keepalive_timeout``: later than any deadline ``waiting_deadline`` can give."""
        return self.request_header_s + self.idle_s + AIOHTTP_BACKSTOP_MARGIN_S


def waiting_deadline(
    timeouts: HeadTimeouts, waiting_since: float, first_request: bool, first_byte_at: float | None
) -> tuple[float, str]:
    """When a connection waiting for a request head is closed, and which rule closes it.

    ``waiting_since`` is when the connection opened (``first_request``) or its previous response ended;
    ``first_byte_at`` when the first byte of the awaited request arrived (None: not one yet).
    """
    header_from = waiting_since if first_request else first_byte_at
    header_deadline = None if header_from is None else header_from + timeouts.request_header_s
    if first_byte_at is not None:
        assert header_deadline is not None
        return header_deadline, REQUEST_TIMEOUT
    idle_deadline = waiting_since + timeouts.idle_s
    if header_deadline is not None and header_deadline < idle_deadline:
        return header_deadline, REQUEST_TIMEOUT
    return idle_deadline, IDLE_TIMEOUT


def timeout_response(timeout_s: float) -> bytes:
    """The whole ``408 Request Timeout`` written to a client whose head did not arrive in time (RFC 9110 §15.5.9:
    the server closes, and says so with ``Connection: close``)."""
    body = json.dumps(
        {
            "error": f"request head not complete within {timeout_s:g} s (server.request_header_timeout_s)",
            "status": 408,
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


class HeadTimeoutHandler(RequestHandler):
    """aiohttp's connection handler with the two clocks above, armed only while it waits for a request head.

    The server (``self._manager``) carries ``pushbench_timeouts`` (``HeadTimeouts``) and ``pushbench_stats``
    (anything with a ``rejected`` Counter); without ``pushbench_timeouts`` this is aiohttp's handler unchanged.

    The timer is lazy, as aiohttp's own keep-alive timer is: one ``call_at`` per connection that may fire before the
    deadline and then re-arms for the current one. A request whose head arrives whole in one read (the common case)
    changes the deadline without cancelling or creating a timer; only a deadline earlier than the pending timer (a
    head that arrives in pieces) re-arms it.
    """

    _pb_timer: asyncio.TimerHandle | None = None
    _pb_timer_at = 0.0  # when the pending timer fires (never after _pb_deadline while waiting)
    _pb_waiting = False  # waiting for a request head: the clocks run
    _pb_deadline = 0.0
    _pb_waiting_since = 0.0
    _pb_first_request = True
    _pb_first_byte_at: float | None = None
    _pb_lingering = False

    def _pb_timeouts(self) -> HeadTimeouts | None:
        return getattr(self._manager, "pushbench_timeouts", None)

    def _pb_arm(self) -> None:
        timeouts = self._pb_timeouts()
        if timeouts is None:
            return
        deadline, _ = waiting_deadline(timeouts, self._pb_waiting_since, self._pb_first_request, self._pb_first_byte_at)
        self._pb_waiting = True
        self._pb_deadline = deadline
        if self._pb_timer is not None:
            if self._pb_timer_at <= deadline:
                return  # it fires first and re-arms for this deadline
            self._pb_timer.cancel()
        self._pb_timer_at = deadline
        self._pb_timer = self._loop.call_at(deadline, self._pb_expire)

    def _pb_disarm(self) -> None:
        """Stop the clocks (a head is complete); a pending timer finds nothing to do when it fires.

        The timer set for a connection's first head (due ``request_header_timeout_s`` after it opened) is dropped
        here: it can only fire to re-arm for a later deadline, and at 10,000 clients those 10,000 callbacks come
        ten seconds after the ramp-up, inside the window. The next wait arms a timer for its own deadline.
        """
        self._pb_waiting = False
        if self._pb_first_request and self._pb_timer is not None:
            self._pb_timer.cancel()
            self._pb_timer = None

    def _pb_cancel(self) -> None:
        self._pb_waiting = False
        if self._pb_timer is not None:
            self._pb_timer.cancel()
            self._pb_timer = None

    def _pb_wait_for_request(self, first_request: bool) -> None:
        self._pb_waiting_since = self._loop.time()
        self._pb_first_request = first_request
        self._pb_first_byte_at = None
        self._pb_arm()

    def _pb_expire(self) -> None:
        self._pb_timer = None
        if not self._pb_waiting:
            return  # a request is being handled: its response's end starts the next wait (and a timer)
        if self._loop.time() < self._pb_deadline:  # fired for an earlier deadline since moved on: wait for this one
            self._pb_timer_at = self._pb_deadline
            self._pb_timer = self._loop.call_at(self._pb_deadline, self._pb_expire)
            return
        timeouts = self._pb_timeouts()
        waiting = self._waiter is not None and not self._waiter.done()
        if timeouts is None or self.transport is None or self._force_close or not waiting:
            return  # a request is being handled (it re-arms when its response ends) or the connection is going
        self._pb_waiting = False
        _, kind = waiting_deadline(timeouts, self._pb_waiting_since, self._pb_first_request, self._pb_first_byte_at)
        stats = getattr(self._manager, "pushbench_stats", None)
        if stats is not None:
            stats.rejected[kind] += 1
        if self._pb_first_byte_at is not None:
            self.transport.write(timeout_response(timeouts.request_header_s))
            self._pb_linger(self.transport)
            return
        self.force_close()  # what aiohttp's own keep-alive timer does: ends start() and closes after the write

    def _pb_linger(self, transport: asyncio.Transport) -> None:
        """Half-close after the 408 and discard what the client still sends, for up to ``LINGER_S`` (nginx's
        lingering close): closing a socket with unread input makes the kernel answer with a reset, which can
        destroy the 408 before the client has read it."""
        self._pb_lingering = True
        if transport.can_write_eof():
            transport.write_eof()  # FIN after the 408: the client reads the answer, then end of stream
        self._loop.call_later(LINGER_S, transport.close)  # a client that never closes its side is closed anyway

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._pb_wait_for_request(first_request=True)

    def data_received(self, data: bytes) -> None:
        if self._pb_lingering:
            return  # answered 408 and half-closed: the rest of the unfinished head is read and dropped
        if not self._pb_waiting:  # not waiting for a head: body bytes, WebSocket frames, pipelined requests
            super().data_received(data)
            return
        first_byte = self._pb_first_byte_at is None and bool(data)
        if first_byte:
            self._pb_first_byte_at = self._loop.time()
        super().data_received(data)
        if self._messages:  # the head is complete (or unparsable, and about to be answered): the handler owns it
            self._pb_disarm()
        elif first_byte:  # a head arriving in pieces: from now on it is due by the request-head deadline
            self._pb_arm()

    async def finish_response(self, request: Any, resp: web.StreamResponse, start_time: float | None) -> Any:
        result = await super().finish_response(request, resp, start_time)
        if resp.keep_alive and self.transport is not None and not (self._force_close or self._close):
            self._pb_wait_for_request(first_request=False)
        return result

    def connection_lost(self, exc: BaseException | None) -> None:
        self._pb_cancel()
        super().connection_lost(exc)


def stream_owns_connection(request: web.BaseRequest) -> None:
    """A stream (a WebSocket, an SSE response) holds its connection from here on: drop the pending head timer at once.

    The lazy timer would otherwise fire once, ``request_header_timeout_s`` after the connection was made, and find
    nothing to do: one empty callback per stream, 10,000 of them inside a 10,000-client window that starts about that
    long after the clients connected. If the connection ever waits for another head, the clocks arm a new timer.
    """
    handler = request.protocol
    if isinstance(handler, HeadTimeoutHandler):
        handler._pb_cancel()
