"""Short polling: ``GET /poll?after=N`` answers at once with the events after N.

Also the answer both polls share (``respond``). A publication releases every held long poll at once, all with the
same cursor, so the whole answer (head and body) is built once per cursor, publication and second (the ``Date``)
and the same bytes are written to each connection's transport, as ``servers.fanout`` does for WebSocket and SSE.
They are byte for byte what aiohttp writes for ``web.Response(body=..., content_type="application/json")``
(``test_direct_answers_are_the_bytes_aiohttp_writes``). When anything could make aiohttp's answer differ (an
``on_response_prepare`` hook: ``server.extra_headers``, ``keepalive = false``, CORS), the request is not plain
keep-alive HTTP/1.1, or the connection still has unsent bytes (aiohttp would then wait for them to drain), the
answer goes through aiohttp's response as before.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

from pushbench.transports import Transport
from servers.feed import Event
from servers.state import check_future_cursor, events_after, parse_cursor, state


def poll_body(cursor: int, events: list[Event]) -> bytes:
    """``{"cursor": C, "events": [...]}`` built from the events' shared serialized bytes."""
    return b'{"cursor":%d,"events":[%s]}' % (cursor, b",".join(e.body for e in events))


def answer_cursor(after: int | None, latest_seq: int, events: list[Event]) -> int:
    """The answer's cursor C: the last seq returned, or N if none (the latest seq when the request had no cursor)."""
    return events[-1].seq if events else (latest_seq if after is None else after)


def answer_bytes(body: bytes, date: str) -> bytes:
    """The whole ``200`` answer as aiohttp serializes a JSON ``web.Response`` on a kept-alive HTTP/1.1 connection."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n\r\n%s"
        % (
            len(body),
            date.encode(),
            SERVER_SOFTWARE.encode(),
            body,
        )
    )


class Answered(web.StreamResponse):
    """Returned once the handler has written the whole answer itself: aiohttp sends nothing more and keeps the
    connection open for the next request."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None

    @property
    def keep_alive(self) -> bool:
        return True


class SharedAnswers:
    """The answers of the current publication, one per (cursor asked after, Date); dropped when either moves on."""

    def __init__(self) -> None:
        self.key: tuple[int, str] = (-1, "")
        self.answers: dict[int, tuple[bytes, int]] = {}  # after -> (answer bytes, events delivered)

    def get(self, after: int | None, latest_seq: int, date: str, events: list[Event]) -> tuple[bytes, int]:
        if (latest_seq, date) != self.key:
            self.key = (latest_seq, date)
            self.answers = {}
        key = -1 if after is None else after
        found = self.answers.get(key)
        if found is None:
            body = poll_body(answer_cursor(after, latest_seq, events), events)
            found = self.answers[key] = (answer_bytes(body, date), len(events))
        return found


SHARED_ANSWERS = web.AppKey("shared_answers", SharedAnswers)


def add_shared_answers(app: web.Application) -> None:
    """Once per app, by each transport whose answers ``respond`` builds."""
    if SHARED_ANSWERS not in app:
        app[SHARED_ANSWERS] = SharedAnswers()


def respond(request: web.Request, after: int | None, events: list[Event]) -> web.StreamResponse:
    """The poll/longpoll answer (its cursor: ``answer_cursor``), as shared bytes when nothing can make aiohttp's
    own answer differ."""
    st = state(request)
    transport = request.transport
    if (
        transport is not None
        and not transport.is_closing()
        and transport.get_write_buffer_size() == 0
        and request.version == HttpVersion11
        and request.keep_alive
        and not request.app.on_response_prepare
    ):
        answer, delivered = request.app[SHARED_ANSWERS].get(after, st.feed.latest_seq, rfc822_formatted_time(), events)
        st.stats.deliveries[route_name(request)] += delivered
        transport.write(answer)
        return Answered()
    st.stats.deliveries[route_name(request)] += len(events)
    body = poll_body(answer_cursor(after, st.feed.latest_seq, events), events)
    return web.Response(body=body, content_type="application/json")


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
    add_shared_answers(app)
    app.router.add_get(transport.path, handle, name=transport.name, allow_head=False)
