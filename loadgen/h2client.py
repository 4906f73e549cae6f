"""The clients over HTTP/2 (the ``h2-tls`` stack): one HTTP/2 connection per client carrying all its requests,
as a browser does per origin, driven by the ``h2`` library (sans-I/O, its HPACK encoder) on pushbench's own
counted TLS connection.

Short and long polls are streams on the one connection; SSE is one long stream; a WebSocket is an RFC 8441
extended CONNECT stream whose DATA frames carry the RFC 6455 frames, when the proxy advertises
``SETTINGS_ENABLE_CONNECT_PROTOCOL``; otherwise it goes on its own HTTP/1.1 TLS connection, as a browser would
(the cell's ``alpn`` column then says ``http/1.1``). The same entry points as the HTTP/1.1 clients:
``run_feed(ctx, client)`` and ``run_echo(ctx, client)``, chosen by the transport's registry record.

Every frame sent and received is cut out of the byte streams (``h2frames``) so the frame headers, HPACK blocks
and control frames are counted where they sit; payload bytes are placed by their plaintext stream position.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from loadgen import ws as ws1
from loadgen.client import ClientContext, ClientState, event_fields, stale_resume_point
from loadgen.conn import ClientError, Connection, ErrorKind
from loadgen.echo import echo_message, echo_schedule
from loadgen.h2frames import FRAME_HEADER_BYTES, FrameSplitter, FrameType, H2Tally, body_spans
from loadgen.headers import H2_DROPPED_HEADERS, h2_request_headers
from loadgen.metrics import next_due_ns, phase_ns
from loadgen.poll import parse_poll_body
from pushbench.units import NS_PER_S

SETTINGS_TIMEOUT_S = 10.0
_WS_H1_ONLY = frozenset({"sec-websocket-key"})  # RFC 8441 §5: no key/accept over HTTP/2; the stream is the tunnel

# (plaintext stream offset of the first byte, bytes, wall clock when the session's reader read them)
Segment = tuple[int, bytes, int]


class H2Stream:
    """One request's response as it arrives: status, then DATA segments with their stream offsets, then end."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._response = asyncio.Event()
        self._data: asyncio.Queue[Segment | None] = asyncio.Queue()
        self.error: ClientError | None = None
        self.ended_ns = 0  # wall clock when END_STREAM was read (the session's reader), 0 before

    def fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        self._response.set()
        self._data.put_nowait(None)

    async def response(self) -> int:
        await self._response.wait()
        if self.error is not None:
            raise self.error
        assert self.status is not None
        return self.status

    async def next_data(self) -> Segment | None:
        """The next DATA segment, or None at the end of the stream (raises if the stream failed)."""
        item = await self._data.get()
        if item is None and self.error is not None:
            raise self.error
        return item

    async def body(self) -> list[Segment]:
        segments = []
        while (item := await self.next_data()) is not None:
            segments.append(item)
        return segments


class H2Session:
    """One client's HTTP/2 connection: h2's state machine over a counted TLS ``Connection``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        conn.timeout_s = None  # quiet streams are not errors; each exchange has its own timeout
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._down = FrameSplitter()
        self._up = FrameSplitter(preface=True)
        self.down_tally, self.up_tally = H2Tally(), H2Tally()
        conn.h2_down, conn.h2_up = self.down_tally, self.up_tally
        self.streams: dict[int, H2Stream] = {}
        self._settings = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.error: ClientError | None = None

    @property
    def extended_connect(self) -> bool:
        """The server advertised SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): WebSockets may use streams."""
        return bool(self.h2.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0))

    async def start(self, timeout_s: float) -> None:
        if self.conn.alpn != "h2":
            raise ClientError(ErrorKind.PROTOCOL, f"the proxy chose {self.conn.alpn or 'no protocol'!r}, not h2")
        self.h2.initiate_connection()
        self.flush()
        self._reader = asyncio.create_task(self._read_loop())
        try:
            async with asyncio.timeout(timeout_s):
                await self._settings.wait()
        except TimeoutError:
            raise ClientError(ErrorKind.TIMEOUT, f"no SETTINGS from the server within {timeout_s}s") from None
        if self.error is not None:
            raise self.error

    def flush(self, payload: tuple[int, int, int] | None = None) -> None:
        """Write what h2 has to send; ``payload`` = (stream id, start, length) of payload inside that stream's
        DATA content, for the ledger."""
        data = self.h2.data_to_send()
        if not data:
            return
        ledger = self.conn.ledger
        spans = []
        for frame in self._up.feed(self.conn.up_offset, data):
            self.up_tally.add(frame, ledger.up_start, _hi(ledger.up_end))
            if payload is not None and frame.type == FrameType.DATA and frame.stream_id == payload[0]:
                at, _ = frame.content()
                spans.append((at - self.conn.up_offset + payload[1], payload[2]))
        self.conn.write(data, spans)

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        self._settings.set()
        for stream in self.streams.values():
            stream.fail(error)

    async def _read_loop(self) -> None:
        try:
            while True:
                offset, data = await self.conn.read_some("HTTP/2 frames")
                if not data:
                    raise ClientError(ErrorKind.DISCONNECT, "the server closed the HTTP/2 connection")
                # Every DATA frame of this read is stamped now, as HTTP/1.1 streams stamp each data_received chunk:
                # an SSE event or WebSocket message is timed when its bytes are parsed, not when its task wakes.
                received_ns = time.time_ns()
                ledger = self.conn.ledger
                for frame in self._down.feed(offset, data):
                    self.down_tally.add(frame, ledger.down_start, _hi(ledger.down_end))
                    stream = self.streams.get(frame.stream_id)
                    if frame.type == FrameType.DATA and stream is not None:
                        at, length = frame.content()
                        skip = at - frame.offset - FRAME_HEADER_BYTES
                        if length:
                            stream._data.put_nowait((at, frame.payload[skip : skip + length], received_ns))
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    raise ClientError(ErrorKind.PROTOCOL, f"HTTP/2: {exc}") from None
                for event in events:
                    self._dispatch(event)
                self.flush()
        except ClientError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            self._fail(ClientError(ErrorKind.DISCONNECT, "HTTP/2 connection closed"))
            raise

    def _dispatch(self, event: Any) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings.set()
        elif isinstance(event, h2.events.ResponseReceived) and stream is not None:
            headers = {str(n): str(v) for n, v in event.headers}
            stream.headers = headers
            stream.status = int(headers.get(":status", "0"))
            stream._response.set()
        elif isinstance(event, h2.events.DataReceived):
            # Give the window back as the data is consumed, as browsers do (WINDOW_UPDATE frames: counted).
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended_ns = time.time_ns()
            stream._data.put_nowait(None)
            del self.streams[stream.stream_id]
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.fail(ClientError(ErrorKind.DISCONNECT, f"stream {stream.stream_id} reset ({event.error_code})"))
            del self.streams[stream.stream_id]
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ClientError(ErrorKind.DISCONNECT, f"GOAWAY from the server ({event.error_code})")

    async def request(self, headers: list[tuple[str, str]], body: bytes = b"", end_stream: bool = True) -> H2Stream:
        """Open a stream with ``headers`` (pseudo-headers first) and an optional payload ``body``."""
        if self.error is not None:
            raise self.error
        stream_id = self.h2.get_next_available_stream_id()
        stream = H2Stream(stream_id)
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, headers, end_stream=end_stream and not body)
        self.flush()
        if body:
            self.send_data(stream_id, body, (0, len(body)), end_stream=end_stream)
        await self.conn.drain()
        return stream

    def send_data(
        self, stream_id: int, data: bytes, payload: tuple[int, int] | None = None, end_stream: bool = False
    ) -> None:
        self.h2.send_data(stream_id, data, end_stream=end_stream)
        self.flush((stream_id, *payload) if payload else None)

    def abort(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.conn.abort()


def _hi(end: int | None) -> float:
    return float("inf") if end is None else end


async def open_session(ctx: ClientContext, client: ClientState) -> H2Session:
    conn = await ctx.connect(client)
    session = H2Session(conn)
    try:
        await session.start(ctx.plan.request_timeout_s)
    except ClientError:
        session.abort()
        raise
    return session


def _request_headers(ctx: ClientContext, method: str, path: str, h1_headers: list[tuple[str, str]]) -> list[Any]:
    return h2_request_headers(method, ctx.plan.scheme, path, h1_headers, authority=ctx.plan.hostport)


async def _timed(awaitable: Awaitable[Any], timeout_s: float, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise ClientError(ErrorKind.TIMEOUT, f"no {what} within {timeout_s}s") from None


async def _fetch(ctx: ClientContext, client: ClientState, session: H2Session, path: str) -> None:
    """One poll or long poll as a stream: deliver its events, move the cursor."""
    target = path if client.cursor is None else f"{path}?after={client.cursor}"
    headers = _request_headers(ctx, "GET", target, ctx.plan.profile.fetch_headers(ctx.plan.hostport, ctx.plan.scheme))
    stream = await session.request(headers)
    status = await _timed(stream.response(), ctx.plan.request_timeout_s, f"response to GET {target}")
    segments = await _timed(stream.body(), ctx.plan.request_timeout_s, f"body of GET {target}")
    received_ns = stream.ended_ns or time.time_ns()  # when the reader saw END_STREAM, not after two task wakes
    body = b"".join(data for _, data, _ in segments)
    if status == 410:
        ctx.stale_resumes += 1
        ctx.count_error(ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {target}"))
        client.cursor = stale_resume_point(body)
    elif status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for GET {target}")
    else:
        cursor, events = parse_poll_body(body)
        layout = [(offset, len(data)) for offset, data, _ in segments]
        for seq, ts, start, length in events:
            for offset, n in body_spans(layout, start, length):
                session.conn.add_down_payload(offset, n)
            ctx.deliver(client, seq, ts, received_ns)
        client.cursor = cursor
    client.ready()


async def _exchange(
    ctx: ClientContext,
    client: ClientState,
    session: H2Session | None,
    exchange: Callable[[H2Session], Awaitable[None]],
) -> tuple[H2Session | None, bool]:
    """``exchange`` on the client's connection, (re)opened first if needed; after a ClientError the connection
    is dropped, the error counted and the client backs off. (the session to keep, whether to go on)"""
    try:
        if session is None or session.error is not None:
            if session is not None:
                session.abort()
            session = await open_session(ctx, client)
        await exchange(session)
        return session, True
    except ClientError as exc:
        if session is not None:
            session.abort()
        return None, await ctx.after_failure(client, exc)


async def _run_polls(ctx: ClientContext, client: ClientState, path: str, scheduled: bool) -> None:
    """Short polls at ``anchor + phase + k * interval`` (``scheduled``) or long polls back to back, all on one
    HTTP/2 connection, reopened (with backoff) only after an error."""
    plan = ctx.plan
    interval = round(plan.poll_interval_s * NS_PER_S)
    phase = phase_ns(plan.seed, client.index, interval)
    session: H2Session | None = None
    try:
        due = time.time_ns()
        while await ctx.sleep_until(due) if scheduled else not ctx.stop.is_set():
            session, going = await _exchange(ctx, client, session, lambda s: _fetch(ctx, client, s, path))
            if not going:
                break
            if scheduled:
                due = next_due_ns(plan.anchor_ns, phase, interval, max(time.time_ns(), due + 1))
    finally:
        if session is not None:
            session.abort()


async def _run_streaming(
    ctx: ClientContext, client: ClientState, stream_session: Callable[[H2Session], Awaitable[None]]
) -> None:
    """A session that holds one stream until it fails; then backoff, reconnect, resume from the cursor."""
    while not ctx.stop.is_set():
        session: H2Session | None = None
        try:
            session = await open_session(ctx, client)
            await stream_session(session)
        except ClientError as exc:
            if not await ctx.after_failure(client, exc):
                break
        finally:
            if session is not None:
                session.abort()


async def _sse(ctx: ClientContext, client: ClientState, session: H2Session) -> None:
    h1 = ctx.plan.profile.fetch_headers(ctx.plan.hostport, ctx.plan.scheme)
    if client.cursor is not None:
        h1.append(("Last-Event-ID", str(client.cursor)))
    path = ctx.plan.transport_spec.path
    stream = await session.request(_request_headers(ctx, "GET", path, h1))
    status = await _timed(stream.response(), ctx.plan.request_timeout_s, f"response to GET {path}")
    if status == 410:
        ctx.stale_resumes += 1
        body = b"".join(d for _, d, _ in await stream.body())
        client.cursor = stale_resume_point(body)
        raise ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {path} (resume point left the history)")
    if status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for GET {path}")
    client.ready()
    from loadgen.sse import SseParser

    parser = SseParser()
    while (segment := await stream.next_data()) is not None:
        offset, data, received_ns = segment  # when the session's reader read the DATA that ends these events
        for event in parser.feed(data, offset):
            seq, ts = event_fields(event.data)
            session.conn.add_down_payload(event.data_offset, len(event.data))
            ctx.deliver(client, seq, ts, received_ns)
            client.cursor = seq
    raise ClientError(ErrorKind.DISCONNECT, "SSE stream ended")


class WsFrameReader:
    """RFC 6455 frames out of a WebSocket stream's DATA segments, with the stream offset of each payload."""

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def feed(self, offset: int, data: bytes) -> list[tuple[ws1.FrameHead, int, bytes]]:
        if not self._buffer:
            self._offset = offset
        buf = self._buffer + data
        frames = []
        pos = 0
        while len(buf) - pos >= 2:
            head = ws1.parse_frame_head(buf[pos : pos + 2])
            at = pos + 2
            length = head.length_code
            if length == 126:
                if len(buf) < at + 2:
                    break
                length, at = struct.unpack("!H", buf[at : at + 2])[0], at + 2
            elif length == 127:
                if len(buf) < at + 8:
                    break
                length, at = struct.unpack("!Q", buf[at : at + 8])[0], at + 8
            key = b""
            if head.masked:
                key, at = buf[at : at + 4], at + 4
            if len(buf) < at + length:
                break
            payload = buf[at : at + length]
            frames.append((head, self._offset + at, ws1.mask(payload, key) if head.masked else payload))
            pos = at + length
        self._buffer = buf[pos:]
        self._offset += pos
        return frames


async def _websocket(ctx: ClientContext, client: ClientState, session: H2Session, target: str, feed: bool) -> None:
    """RFC 8441: CONNECT with ``:protocol websocket``; then RFC 6455 frames in DATA frames both ways."""
    profile = ctx.plan.profile.websocket_headers(
        ctx.plan.hostport, "x" * 24, offer_deflate=ctx.plan.ws_compress, scheme=ctx.plan.scheme
    )
    fields = [(n.lower(), v) for n, v in profile if n.lower() not in H2_DROPPED_HEADERS | _WS_H1_ONLY]
    headers = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", ctx.plan.scheme),
        (":authority", ctx.plan.hostport),
        (":path", target),
        *fields,
    ]
    stream = await session.request(headers, end_stream=False)
    status = await _timed(stream.response(), ctx.plan.request_timeout_s, f"response to CONNECT {target}")
    if status == 410:
        ctx.stale_resumes += 1
        client.cursor = stale_resume_point(b"".join(d for _, d, _ in await stream.body()))
        raise ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {target} (resume point left the history)")
    if status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for the extended CONNECT on {target}")
    client.ready()
    deflate = "permessage-deflate" in stream.headers.get("sec-websocket-extensions", "")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflate else None
    sid = stream.stream_id

    def send(opcode: int, payload: bytes, is_payload: bool = False) -> None:
        frame, at = ws1.encode_frame(opcode, payload, os.urandom(4))
        session.send_data(sid, frame, (at, len(payload)) if is_payload and payload else None)

    async def receive() -> None:
        reader = WsFrameReader()
        while (segment := await stream.next_data()) is not None:
            at, data, received_ns = segment  # when the session's reader read the DATA that ends these frames
            for head, offset, payload in reader.feed(at, data):
                if head.opcode == ws1.OP_TEXT:
                    message = inflater.decompress(payload + ws1.DEFLATE_TAIL) if head.rsv1 and inflater else payload
                    seq, ts = event_fields(message)
                    session.conn.add_down_payload(offset, len(payload), payload_bytes=len(message))
                    ctx.deliver(client, seq, ts, received_ns)
                    if feed:
                        client.cursor = seq
                elif head.opcode == ws1.OP_PING:
                    send(ws1.OP_PONG, payload)
                elif head.opcode == ws1.OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    raise ClientError(ErrorKind.DISCONNECT, f"server closed the WebSocket with {code}")
        raise ClientError(ErrorKind.DISCONNECT, "WebSocket stream ended")

    if feed:
        await receive()
        return

    async def send_echoes() -> None:
        async for seq, intended_ns in echo_schedule(ctx, client):
            send(ws1.OP_TEXT, echo_message(client, seq, intended_ns, ctx.plan.payload_bytes), is_payload=True)
            await session.conn.drain()

    tasks = [asyncio.create_task(send_echoes()), asyncio.create_task(receive())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for task, outcome in zip(tasks, outcomes, strict=True):
        if task in done and isinstance(outcome, Exception):
            raise outcome


async def _run_websocket(ctx: ClientContext, client: ClientState, feed: bool) -> None:
    """RFC 8441 when the proxy offers it; else the HTTP/1.1 client on its own TLS connection (ALPN http/1.1)."""
    probe = await _probe_extended_connect(ctx, client)
    if not probe:
        ctx.h1_fallback = True
        await (ws1.run_feed(ctx, client) if feed else ws1.run_echo(ctx, client))
        return
    base = ctx.plan.transport_spec.path

    async def session_main(session: H2Session) -> None:
        target = base if not feed else (base if client.cursor is None else f"{base}?after={client.cursor}")
        await _websocket(ctx, client, session, target if feed else f"{base}?mode=echo", feed)

    await _run_streaming(ctx, client, session_main)


async def _probe_extended_connect(ctx: ClientContext, client: ClientState) -> bool:
    """Whether the proxy advertises RFC 8441 (asked once per worker, before any client needs to know)."""
    if ctx.extended_connect is None:
        session: H2Session | None = None
        try:
            session = await open_session(ctx, client)
            ctx.extended_connect = session.extended_connect
        except ClientError:
            return True  # unknown yet: try RFC 8441; a failing session backs off and retries like any other
        finally:
            if session is not None:
                session.abort()
    return bool(ctx.extended_connect)


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    spec = ctx.plan.transport_spec
    if spec.handshake == "websocket":
        await _run_websocket(ctx, client, feed=True)
    elif spec.streams:
        await _run_streaming(ctx, client, functools.partial(_sse, ctx, client))
    else:
        await _run_polls(ctx, client, spec.path, scheduled=spec.polls)


async def _post_echo(ctx: ClientContext, client: ClientState, session: H2Session, *, seq: int, body: bytes) -> None:
    h1 = ctx.plan.profile.post_headers(ctx.plan.hostport, "application/json", len(body), ctx.plan.scheme)
    stream = await session.request(_request_headers(ctx, "POST", "/echo", h1), body)
    status = await _timed(stream.response(), ctx.plan.request_timeout_s, "response to POST /echo")
    segments = await _timed(stream.body(), ctx.plan.request_timeout_s, "body of POST /echo")
    received_ns = stream.ended_ns or time.time_ns()  # when the reader saw END_STREAM, as polls are stamped
    if status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for POST /echo")
    reply = b"".join(d for _, d, _ in segments)
    if reply != body:
        raise ClientError(ErrorKind.PROTOCOL, f"echo of message {seq} differs from what was sent")
    for offset, data, _ in segments:
        session.conn.add_down_payload(offset, len(data))
    got_seq, got_ts = event_fields(reply)
    ctx.deliver(client, got_seq, got_ts, received_ns)
    client.ready()


async def run_echo(ctx: ClientContext, client: ClientState) -> None:
    if ctx.plan.transport_spec.handshake == "websocket":
        await _run_websocket(ctx, client, feed=False)
        return
    session: H2Session | None = None
    try:
        with contextlib.suppress(ClientError):
            session = await open_session(ctx, client)  # at ramp-up time, before the window
        async for seq, intended_ns in echo_schedule(ctx, client):
            body = echo_message(client, seq, intended_ns, ctx.plan.payload_bytes)
            session, going = await _exchange(
                ctx, client, session, functools.partial(_post_echo, ctx, client, seq=seq, body=body)
            )
            if not going:
                break
    finally:
        if session is not None:
            session.abort()
