"""Server-Sent Events: one ``GET /sse`` stream per client; reconnects resume with ``Last-Event-ID``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from loadgen.client import ClientContext, ClientState, stale_resume_point
from loadgen.conn import ClientError, Connection, ErrorKind
from loadgen.headers import header_block

MAX_CHUNK_LINE_BYTES = 1024


@dataclass(frozen=True)
class SseEvent:
    event_id: str | None
    data: bytes
    data_offset: int  # stream offset of the first data byte


class SseParser:
    """Incremental ``text/event-stream`` parser (single ``data:`` line per event, as pushbench's server sends).

    ``feed(chunk, offset)`` takes de-chunked bytes and the stream offset of their first byte. A line split
    across HTTP chunks is placed as if contiguous from where it started (the chunk framing in between
    shifts it by a few bytes; aiohttp writes each record as one chunk, so this does not happen in practice).
    """

    def __init__(self) -> None:
        self._line = b""
        self._line_offset = 0
        self._id: str | None = None
        self._data: bytes | None = None
        self._data_offset = 0
        self.comments = 0

    @property
    def idle(self) -> bool:
        """Between records: no line or field is half-way."""
        return not self._line and self._data is None

    def feed(self, chunk: bytes, offset: int) -> list[SseEvent]:
        if not self._line and self._data is None and (at := whole_record(chunk, 0, len(chunk))) is not None:
            # The common case (what pushbench's server writes as one chunk): a few finds instead of the line loop.
            self._id = chunk[4 : at - 7].decode("utf-8", "replace")
            return [SseEvent(self._id, chunk[at:-2], offset + at)]
        events: list[SseEvent] = []
        pos = 0
        while True:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                if not self._line:
                    self._line_offset = offset + pos
                self._line += chunk[pos:]
                return events
            if self._line:
                line, line_offset = self._line + chunk[pos:nl], self._line_offset
                self._line = b""
            else:
                line, line_offset = chunk[pos:nl], offset + pos
            event = self._line_done(line.removesuffix(b"\r"), line_offset)
            if event is not None:
                events.append(event)
            pos = nl + 1

    def _line_done(self, line: bytes, line_offset: int) -> SseEvent | None:
        if not line:
            if self._data is None:
                return None
            event = SseEvent(self._id, self._data, self._data_offset)
            self._data = None
            return event
        if line.startswith(b":"):
            self.comments += 1
            return None
        name, _, value = line.partition(b":")
        skip = len(name) + 1
        if value.startswith(b" "):
            value, skip = value[1:], skip + 1
        if name == b"id":
            self._id = value.decode("utf-8", "replace")
        elif name == b"data":
            self._data = value
            self._data_offset = line_offset + skip
        return None


async def stream(ctx: ClientContext, client: ClientState, conn: Connection) -> None:
    """Open the stream and deliver events until it ends (a ClientError says why)."""
    headers = ctx.plan.profile.fetch_headers(ctx.plan.hostport, ctx.plan.scheme)
    if client.cursor is not None:
        headers.append(("Last-Event-ID", str(client.cursor)))
    path = ctx.plan.transport_spec.path
    conn.write(f"GET {path} HTTP/1.1\r\n".encode() + header_block(headers) + b"\r\n")
    await conn.drain()
    status, resp_headers = await conn.read_head()
    if status == 410:
        ctx.stale_resumes += 1
        body = b""
        if "content-length" in resp_headers:
            _, body = await conn.read_exactly(int(resp_headers["content-length"]), "410 body")
        client.cursor = stale_resume_point(body)
        raise ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {path} (resume point left the history)")
    if status != 200:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for GET {path}")
    if "chunked" not in resp_headers.get("transfer-encoding", "").lower():
        raise ClientError(ErrorKind.PROTOCOL, "SSE response is not chunked")
    client.ready()
    # Heartbeats arrive every sse_heartbeat_s at most, so silence is not an error: wait until stopped.
    conn.timeout_s = None
    await conn.run_sink(ChunkedSseSink(ctx, client, conn).consume)


def whole_record(data: bytes | bytearray, start: int, stop: int) -> int | None:
    """Where D starts when ``data[start:stop]`` is exactly one ``id: N`` + ``data: D`` record (LF line ends, no
    other field, D up to ``stop - 2``: what pushbench's server writes per event); None for anything else.

    Prefixes are compared as slices (``startswith`` with a start offset parses its arguments at about twice the
    cost)."""
    if data[start : start + 4] != b"id: ":
        return None
    nl = data.find(b"\n", start, stop)
    at = nl + 7
    if (
        nl >= 0
        and data[nl + 1 : at] == b"data: "
        and data.find(b"\n", at, stop) == stop - 2
        and data[stop - 1] == 10
        and data.find(b"\r", start, stop) < 0
    ):
        return at
    return None


class ChunkedSseSink:
    """The SSE receive path (its ``consume`` is a ``Connection`` sink): every whole HTTP chunk of each received chunk of bytes is
    de-chunked and parsed where it lies; each event is delivered with its data placed in the TCP stream.

    Runs once per message. pushbench's server writes every event as one chunk holding one ``id: N`` + ``data: D``
    record, and consecutive chunks are framed alike (the same size line, and ``N`` of the same length, until the
    seq gains a digit): the first such chunk is parsed in full (``split_chunk``, ``whole_record``) and its framing
    remembered as the ``shape``; a next chunk with the same framing bytes at the same places, exactly the record's
    three line feeds and no CR ending its data line, is delivered from a few slice comparisons instead of a
    parse. Anything else goes through ``split_chunk`` and ``SseParser``, which deliver the same data (the id is
    not used: the cursor is the event's seq)."""

    def __init__(self, ctx: ClientContext, client: ClientState, conn: Connection) -> None:
        self.ctx = ctx
        self.deliver = ctx.deliver_event  # bound once: it is called once per message
        self.client = client
        self.conn = conn
        self.parser = SseParser()
        self.parser_idle = True  # the parser is between records (its ``idle``, read after each ``feed``)
        # The last whole record's framing: its chunk's first bytes up to and including "id: " (size line, CRLF),
        # their length, where its D starts and where the chunk ends (after its CRLF), from the chunk's start.
        self.shape: tuple[bytes, int, int, int] = NO_SHAPE

    def consume(self, data: bytes | bytearray, offset: int) -> int:
        received_ns = time.time_ns()
        deliver, client, conn = self.deliver, self.client, self.conn
        head, head_len, at_rel, end_rel = self.shape
        pos, size, idle = 0, len(data), self.parser_idle
        while pos < size:
            at, end = pos + at_rel, pos + end_rel
            if (
                idle
                and data[pos : pos + head_len] == head
                and data[at - 7 : at] == b"\ndata: "
                and data[end - 4 : end] == b"\n\n\r\n"
                and data.count(b"\n", pos + head_len, end - 2) == 3
                and data[end - 5] != 13
            ):
                client.cursor = deliver(client, conn, data[at : end - 4], offset + at, end - 4 - at, received_ns)
                pos = end
                continue
            chunk = split_chunk(data, pos)
            if chunk is None:
                break
            start, stop = chunk
            if start == stop:
                raise ClientError(ErrorKind.DISCONNECT, "SSE stream ended")
            # One whole record, the parser between records: delivered where it lies. Anything else: the parser.
            if idle and (found := whole_record(data, start, stop)) is not None:
                client.cursor = deliver(
                    client, conn, data[found : stop - 2], offset + found, stop - 2 - found, received_ns
                )
                self.shape = head, head_len, at_rel, end_rel = (
                    bytes(data[pos : start + 4]), start + 4 - pos, found - pos, stop + 2 - pos
                )  # fmt: skip
            else:
                for event in self.parser.feed(bytes(data[start:stop]), offset + start):
                    client.cursor = deliver(client, conn, event.data, event.data_offset, len(event.data), received_ns)
                idle = self.parser_idle = self.parser.idle
            pos = stop + 2
        return pos


NO_SHAPE = (b"--", 1, 0, 0)  # no framing yet: a head one byte longer than the slice compared with it never matches


def split_chunk(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(start, end) of the data of the HTTP/1.1 chunk at ``data[pos]`` (start == end: the last chunk); None while
    the chunk and its CRLF are not wholly in ``data`` (RFC 9112 §7.1; no trailers expected after the last)."""
    nl = data.find(b"\r\n", pos)
    if nl < 0:
        if len(data) - pos > MAX_CHUNK_LINE_BYTES:
            raise ClientError(ErrorKind.PROTOCOL, "chunk size line too long")
        return None
    try:
        size = int(data[pos:nl], 16)
    except ValueError:  # a chunk extension (";name=value"), or not a size at all
        try:
            size = int(bytes(data[pos:nl]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ClientError(ErrorKind.PROTOCOL, f"bad chunk size line {bytes(data[pos:nl])[:40]!r}") from None
    start = nl + 2
    stop = start + size
    if stop + 2 > len(data):
        return None
    if data[stop] != 13 or data[stop + 1] != 10:
        raise ClientError(ErrorKind.PROTOCOL, "chunk not followed by CRLF")
    return start, stop


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    async def session(conn: Connection) -> Connection | None:
        await stream(ctx, client, conn)
        return conn

    await ctx.run_sessions(client, session)
