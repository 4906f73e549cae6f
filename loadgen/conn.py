"""One client TCP connection: asyncio streams that know their byte offsets, kernel counters, and HTTP/1.1.

Every byte read or written goes through ``Connection``, which keeps the offset of each byte in the TCP
stream, so the clients can tell ``PayloadLedger`` exactly where each payload byte sits. The kernel's
counters (``TCP_INFO``) are read when the connection opens, at window start and end while it is open, and
just before it closes, through a duplicate of the socket's file descriptor: asyncio closes its own
descriptor as soon as a connection is reset, and the duplicate keeps the kernel socket, and its
counters, readable until pushbench has read them.

Over TLS (the ``*-tls`` stacks) the same connection carries ``ssl``: the client reads and writes plaintext,
counted as it passes (``_Receiver.received``, ``up_offset``), while ``TCP_INFO`` of the socket underneath still
gives the kernel's bytes, so TLS overhead is their difference. Payload positions are then plaintext stream
positions and the window's edges are the plaintext counts at the marks (the window starts and ends between
publications, when no record is half-way). A connection opened inside the window counts from the stream's
first byte: its handshake (the TCP bytes before the handshake completed) is kept apart.

The HTTP client is deliberately small (request line, header lines, Content-Length or chunked bodies):
pushbench must know every byte it puts on the wire, and ``minimal`` must really be minimal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, NamedTuple

from loadgen.h2frames import H2Tally
from loadgen.headers import header_block
from loadgen.metrics import PayloadLedger
from loadgen.wire import TCP_CLOSE, TcpInfo, WireCountersUnavailable, peer_fin_received, read_tcp_info

MAX_HEADER_BYTES = 64 * 1024
READ_BUFFER_BYTES = 1024 * 1024  # received but unread bytes beyond which reading pauses (request/response mode)
GRACEFUL_CLOSE_WAIT_S = 0.05
REUSE_RACE_S = 0.05  # a kept-alive request failing this fast met a close already under way


class ErrorKind(StrEnum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    PROTOCOL = "protocol"
    DISCONNECT = "disconnect"


ERROR_KINDS = tuple(k.value for k in ErrorKind)


class Limit(StrEnum):
    """An operating-system limit a connect ran into (``loadgen.summary.stopped_by`` names it for the cell)."""

    FD = "fd"  # EMFILE / ENFILE: the client's descriptors
    PORTS = "ports"  # EADDRNOTAVAIL: no ephemeral port left for this source address
    CONNECT_TIMEOUT = "connect_timeout"  # the handshake did not complete in time (a full accept queue drops SYNs)


LIMIT_ERRNOS: dict[int | None, Limit] = {
    errno.EMFILE: Limit.FD,
    errno.ENFILE: Limit.FD,
    errno.EADDRNOTAVAIL: Limit.PORTS,
}


class ClientError(Exception):
    """A failure a client counts and recovers from (by reconnecting), classified by kind; ``limit`` when an
    operating-system limit caused it."""

    def __init__(self, kind: ErrorKind, message: str, limit: Limit | None = None) -> None:
        self.kind = kind
        self.limit = limit
        super().__init__(f"{kind.value}: {message}")


class ConnectionReused(ClientError):
    """A kept-alive connection turned out to be closed by the server before it answered: retry on a new one.

    HTTP/1.1 lets a server close an idle persistent connection at any time, and a request sent at that
    instant fails at once; clients, browsers included, retry an idempotent request once on a fresh
    connection. Not counted as an error. A request that fails later (a held long poll cut) is a disconnect.
    """

    def __init__(self) -> None:
        super().__init__(ErrorKind.DISCONNECT, "the server closed the kept-alive connection")


class Phase(Enum):
    BEFORE = 0
    IN = 1
    AFTER = 2


@dataclass
class ConnRecord:
    """What one connection carried inside the window (deltas), one row of connections.parquet."""

    client: int
    conn_seq: int
    opened_ns: int
    closed_ns: int | None
    bytes_down_tcp: int
    bytes_up_tcp: int
    segs_in: int
    segs_out: int
    bytes_down_payload: int
    bytes_up_payload: int
    timestamps: bool
    # The application's byte streams (HTTP and everything above), as the client wrote and read them:
    # equal to the TCP bytes in cleartext; over TLS the difference is TLS's (records, handshake, alerts).
    bytes_down_plain: int = 0
    bytes_up_plain: int = 0
    bytes_down_tls_handshake: int = 0  # TCP bytes before the handshake completed (connections opened inside)
    bytes_up_tls_handshake: int = 0
    tls: bool = False
    alpn: str = ""  # the protocol the proxy chose by ALPN ("h2", "http/1.1"), "" in cleartext
    # HTTP/2 (inside bytes_*_http): 9-byte frame headers, HPACK blocks as sent, control frame payloads; and the
    # size of every header block in the window (requests up, responses down), for their distribution.
    bytes_down_h2_frame_headers: int = 0
    bytes_up_h2_frame_headers: int = 0
    bytes_down_hpack: int = 0
    bytes_up_hpack: int = 0
    bytes_down_h2_control: int = 0
    bytes_up_h2_control: int = 0
    h2_request_blocks: list[int] = field(default_factory=list)
    h2_response_blocks: list[int] = field(default_factory=list)
    h2_first_request_block: int | None = None  # the connection's first request (the full block), in the window or not


@dataclass
class _Mark:
    down: int
    up: int
    segs_in: int
    segs_out: int
    plain_down: int = 0  # the plaintext stream offsets at the same instant (= down/up in cleartext)
    plain_up: int = 0


@dataclass
class WindowBook:
    """A worker's view of the window: which connections are open, and what each carried inside it."""

    phase: Phase = Phase.BEFORE
    open: set[Connection] = field(default_factory=set)
    records: list[ConnRecord] = field(default_factory=list)
    opened_in_window: int = 0
    concurrent_peak: int = 0
    counter_errors: int = 0
    sweep_end_mono: float = float("-inf")  # when the last window-edge TCP_INFO sweep returned (time.monotonic)

    def start(self) -> None:
        self.phase = Phase.IN
        for conn in list(self.open):
            conn.mark_start()
        self.concurrent_peak = len(self.open)
        self.sweep_end_mono = time.monotonic()

    def end(self) -> None:
        for conn in list(self.open):
            conn.mark_end()
        self.phase = Phase.AFTER
        self.sweep_end_mono = time.monotonic()


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    body_offset: int  # stream offset of the first body byte (after de-chunking: of the first chunk's data)
    keep_alive: bool
    received_ns: int  # wall clock when its last byte was parsed (in data_received, as pushed events are stamped)


Sink = Callable[[bytes | bytearray, int], int]  # a function or bound method: an object's __call__ costs more per call


@dataclass(frozen=True, slots=True)
class EncodedGet:
    """``GET path`` or ``GET path?after=N`` with a fixed header block, encoded once: per request only the
    cursor's digits are formatted."""

    bare: bytes  # without a cursor
    prefix: bytes  # up to and including "after="
    suffix: bytes  # from the space before "HTTP/1.1" to the blank line

    @classmethod
    def build(cls, path: str, headers: Sequence[tuple[str, str]]) -> EncodedGet:
        block = header_block(headers) + b"\r\n"
        return cls(
            f"GET {path} HTTP/1.1\r\n".encode("latin-1") + block,
            f"GET {path}?after=".encode("latin-1"),
            b" HTTP/1.1\r\n" + block,
        )

    def encode(self, cursor: int | None) -> bytes:
        return self.bare if cursor is None else b"%s%d%s" % (self.prefix, cursor, self.suffix)


class _Receiver(asyncio.Protocol):
    """The asyncio side of a ``Connection``: received bytes in one buffer, one waiter, an optional sink.

    Request/response exchanges (handshakes, polls) await ``Connection.read_*``, which wait here until enough
    bytes are buffered. A stream (WebSocket frames, SSE records) instead installs a *sink*: every
    ``data_received`` chunk goes straight to it, it consumes every whole message there is and returns how many
    bytes it consumed; the rest waits in the buffer for the next chunk. No task switch, no timer, no await per
    message. TLS changes nothing here: the transport hands over plaintext either way.

    A sink that reads one message (an HTTP response) and is done uninstalls itself and sets ``finished``, called
    once the chunk's bytes are accounted for; ``on_end`` is told when the stream ends or the sink fails first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.exc: BaseException | None = None  # why the connection was lost (None: cleanly)
        self.lost = False
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.sink: Sink | None = None
        self.sink_done: asyncio.Future[None] | None = None
        self.on_end: Callable[[ClientError], None] | None = None  # the sink's stream ended or the sink failed
        self.finished: Callable[[], None] | None = None  # set by a sink that read its whole message
        self.consumed = 0  # bytes of the received stream consumed (by reads or the sink)
        self.received = 0  # bytes the transport handed over (plaintext over TLS)
        self.over_ssl = False

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.over_ssl = transport.get_extra_info("sslcontext") is not None

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        sink = self.sink
        if sink is None:
            self.buffer += data
            if len(self.buffer) > READ_BUFFER_BYTES and not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
            self._wake()
            return
        try:
            if self.buffer:
                self.buffer += data
                n = sink(self.buffer, self.consumed)
                del self.buffer[:n]
            else:
                n = sink(data, self.consumed)
                if n < len(data):
                    self.buffer += data[n:] if n else data
            self.consumed += n
        except Exception as exc:
            self._sink_raised(exc)
            return
        if self.finished is not None:  # checked here first: this runs for every chunk a stream receives
            self._call_finished()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        self._end_sink(ClientError(ErrorKind.DISCONNECT, "the server closed the connection"))
        return not self.over_ssl  # keep our side open: Connection.close() sends our FIN (SSL cannot half-close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.eof = True
        self.exc = exc
        self._wake()
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        reason = f"connection lost: {exc}" if exc else "the server closed the connection"
        self._end_sink(ClientError(ErrorKind.DISCONNECT, reason))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # for Connection

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end_sink(self, exc: ClientError) -> None:
        done = self.sink_done
        if done is not None and not done.done():
            self.sink = None
            done.set_exception(exc)
        on_end = self.on_end
        if on_end is not None:
            self.sink = self.on_end = None
            on_end(exc)

    def _sink_raised(self, exc: Exception) -> None:
        """A sink raised: a ClientError ends it as it is; anything else is a message the sink cannot make sense
        of (bad JSON, bad deflate stream, ...), a protocol error."""
        if not isinstance(exc, ClientError):
            exc = ClientError(ErrorKind.PROTOCOL, f"{type(exc).__name__}: {exc}")
        self._end_sink(exc)

    def _call_finished(self) -> bool:
        """Call (once) what a sink that read its whole message set; False when there was nothing to call."""
        finished = self.finished
        if finished is None:
            return False
        self.finished = None
        finished()
        return True

    def feed_buffered(self, ended: Callable[[], ClientError]) -> None:
        """Hand the installed sink what was buffered before it was installed, as ``data_received`` would; if the
        stream has already ended, tell ``on_end`` (with ``ended()``) unless the sink finished its message."""
        sink = self.sink
        if sink is None:
            return
        try:
            if self.buffer:
                self.discard(sink(self.buffer, self.consumed))
        except Exception as exc:
            self._sink_raised(exc)
            return
        if not self._call_finished() and self.eof and self.sink is sink:
            self._end_sink(ended())

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        self.discard(n)
        return data

    def discard(self, n: int) -> None:
        """Consume ``n`` buffered bytes (``take`` without the copy: a sink has read them in place)."""
        if n:
            del self.buffer[:n]
            self.consumed += n
        if self.read_paused and len(self.buffer) <= READ_BUFFER_BYTES // 2 and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    async def wait_data(self) -> None:
        if self.eof:
            return
        self.waiter = self.loop.create_future()
        await self.waiter

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("connection lost")
        if self.write_paused:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter


class Connection:
    """A TCP connection owned by one client; see the module docstring."""

    def __init__(
        self,
        book: WindowBook,
        client: int,
        conn_seq: int,
        transport: asyncio.Transport,
        protocol: _Receiver,
        timeout_s: float,
        handshake: tuple[int, int] = (0, 0),
    ) -> None:
        self.book = book
        self.client = client
        self.conn_seq = conn_seq
        self.transport = transport
        self._rx = protocol
        self.timeout_s: float | None = timeout_s  # per read or send; None for streams that may stay quiet
        self.up_offset = 0  # bytes written to the sent stream
        self.ledger = PayloadLedger()
        self.opened_ns = time.time_ns()
        self.closed = False
        self.responses = 0  # complete responses read on this connection
        transport_sock = transport.get_extra_info("socket")  # the TCP socket, also under TLS
        self._sock = socket.socket(fileno=os.dup(transport_sock.fileno()))
        ssl_object = transport.get_extra_info("ssl_object")
        self.tls = ssl_object is not None
        self.alpn = (ssl_object.selected_alpn_protocol() or "") if ssl_object is not None else ""
        # The HTTP/1.1 exchange in flight (``send_request``): its response parser, whom to tell when it ends,
        # how it failed, where its response starts in the received stream, when it was sent, its deadline.
        self._parser: ResponseParser | None = None
        self._on_done: Callable[[], None] | None = None  # set while the exchange is in flight
        self._failure: ClientError | None = None
        self._failed_after_s = 0.0
        self._head_at = 0
        self._sent_at = 0.0
        self._deadline = 0.0  # time.monotonic(); 0: not armed yet (the request is still being sent)
        self._timer: asyncio.TimerHandle | None = None  # one per connection, re-armed only when it fires early
        self.h2_down: H2Tally | None = None  # set by an HTTP/2 session on this connection
        self.h2_up: H2Tally | None = None
        self._start: _Mark | None = None
        self._end: _Mark | None = None
        self._timestamps = False
        # TLS: (down, up) TCP bytes of the handshake, counted for connections opened inside the window only.
        self._handshake = handshake if book.phase is Phase.IN else (0, 0)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        book.open.add(self)
        if book.phase is Phase.IN:
            book.opened_in_window += 1
            book.concurrent_peak = max(book.concurrent_peak, len(book.open))
            self.mark_opened()

    @classmethod
    async def open(
        cls,
        book: WindowBook,
        client: int,
        conn_seq: int,
        host: str,
        port: int,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        source: str | None = None,
    ) -> Connection:
        """Connect from ``source`` (an address of this host; None: the kernel's choice), and complete the TLS
        handshake when ``ssl_context`` is given."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                transport, protocol = await loop.create_connection(
                    lambda: _Receiver(loop),
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                    local_addr=(source, 0) if source else None,
                )
        except TimeoutError:
            raise ClientError(
                ErrorKind.CONNECT, f"connect to {host}:{port} timed out after {timeout_s}s", Limit.CONNECT_TIMEOUT
            ) from None
        except ssl.SSLError as exc:
            raise ClientError(ErrorKind.CONNECT, f"TLS handshake with {host}:{port}: {exc}") from None
        except OSError as exc:
            where = f" from {source}" if source else ""
            raise ClientError(
                ErrorKind.CONNECT,
                f"connect to {host}:{port}{where}: {exc.strerror or exc}",
                LIMIT_ERRNOS.get(exc.errno),
            ) from None
        handshake = (0, 0)
        if ssl_context is not None:
            handshake = await _handshake_bytes(transport.get_extra_info("socket"))
        try:
            return cls(book, client, conn_seq, transport, protocol, timeout_s, handshake)
        except OSError as exc:  # the duplicate descriptor the kernel counters are read through
            transport.abort()
            raise ClientError(
                ErrorKind.CONNECT, f"connect to {host}:{port}: {exc.strerror or exc}", LIMIT_ERRNOS.get(exc.errno)
            ) from None

    @property
    def down_offset(self) -> int:
        """Bytes of the received stream consumed so far (the stream offset of the next byte read)."""
        return self._rx.consumed

    # --- kernel counters ---------------------------------------------------------------------------

    def _read(self, own_fin: bool = False) -> _Mark | None:
        try:
            info = read_tcp_info(self._sock)
        except (OSError, WireCountersUnavailable):
            self.book.counter_errors += 1
            return None
        self._timestamps = info.timestamps
        down, up = _offsets(info, own_fin)
        if self.tls:
            return _Mark(down, up, info.segs_in, info.segs_out, self._rx.received, self.up_offset)
        return _Mark(down, up, info.segs_in, info.segs_out, down, up)

    def mark_start(self) -> None:
        mark = self._read()
        if mark is None:
            return
        self._start = mark
        self.ledger.mark_start(mark.plain_down, mark.plain_up)

    def mark_opened(self) -> None:
        """Opened inside the window: count from the first byte and segment; the TLS handshake is set apart."""
        self._start = _Mark(0, 0, 0, 0, 0, 0)
        self.ledger.mark_start(0, 0)

    def mark_end(self, mark: _Mark | None = None) -> None:
        mark = mark or self._read()
        if mark is None or self._start is None:
            return
        self._end = mark
        self.ledger.mark_end(mark.plain_down, mark.plain_up)

    # --- bytes -------------------------------------------------------------------------------------

    async def _wait(self, what: str) -> None:
        """Wait for more received bytes (or the end of the stream), within the connection's timeout."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._rx.wait_data()
        except TimeoutError:
            raise ClientError(ErrorKind.TIMEOUT, f"no {what} within {self.timeout_s}s") from None

    def _ended(self, what: str) -> ClientError:
        exc = self._rx.exc
        if exc is not None:
            return ClientError(ErrorKind.DISCONNECT, f"{what}: {exc}")
        return ClientError(ErrorKind.DISCONNECT, f"connection closed while reading {what}")

    async def read_until(self, separator: bytes, what: str, limit: int = MAX_HEADER_BYTES) -> tuple[int, bytes]:
        rx = self._rx
        start = 0
        while True:
            at = rx.buffer.find(separator, start)
            if at >= 0:
                offset = rx.consumed
                return offset, rx.take(at + len(separator))
            if len(rx.buffer) > limit:
                raise ClientError(ErrorKind.PROTOCOL, f"{what} too long")
            if rx.eof:
                raise self._ended(what)
            start = max(0, len(rx.buffer) - len(separator) + 1)
            await self._wait(what)

    async def read_exactly(self, n: int, what: str) -> tuple[int, bytes]:
        rx = self._rx
        while len(rx.buffer) < n:
            if rx.eof:
                raise self._ended(what)
            await self._wait(what)
        offset = rx.consumed
        return offset, rx.take(n)

    async def read_some(self, what: str, limit: int = 65536, timeout_s: float | None = None) -> tuple[int, bytes]:
        """Up to ``limit`` bytes; b"" at end of stream. ``timeout_s`` replaces the connection's for this read."""
        rx = self._rx
        if not rx.buffer and not rx.eof:
            saved = self.timeout_s
            if timeout_s is not None:
                self.timeout_s = timeout_s
            try:
                await self._wait(what)
            finally:
                self.timeout_s = saved
        offset = rx.consumed
        return offset, rx.take(min(limit, len(rx.buffer)))

    async def run_sink(self, sink: Sink) -> None:
        """Hand every received byte to ``sink(data, offset)`` until the connection ends or the sink raises.

        ``sink`` gets the unconsumed bytes and the stream offset of their first byte, consumes every whole
        message it finds and returns how many bytes that was; it raises ClientError to end the stream. This
        returns only by raising: the ClientError that ended it.
        """
        rx = self._rx
        if self._timer is not None:  # a stream makes no more exchanges: their timeout is not needed
            self._timer.cancel()
            self._timer = None
        rx.sink_done = done = rx.loop.create_future()
        try:
            if rx.buffer:
                n = sink(rx.buffer, rx.consumed)
                rx.take(n)
            if rx.eof:
                raise self._ended("stream")
            rx.sink = sink
            await done
        finally:
            rx.sink = None
            rx.sink_done = None
        raise AssertionError("unreachable: the sink future only ends with an exception")

    def write(self, data: bytes, payload_spans: Sequence[tuple[int, int]] = ()) -> None:
        """Send ``data``; ``payload_spans`` are (start, length) of its payload bytes, relative to ``data``."""
        if self.transport.is_closing() or self._rx.lost:
            raise ClientError(ErrorKind.DISCONNECT, "connection already closed")
        for start, length in payload_spans:
            self.ledger.add_up(self.up_offset + start, length)
        self.up_offset += len(data)
        self.transport.write(data)

    async def drain(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._rx.drain()
        except TimeoutError:
            raise ClientError(ErrorKind.TIMEOUT, f"could not send within {self.timeout_s}s") from None
        except (ConnectionError, OSError) as exc:
            raise ClientError(ErrorKind.DISCONNECT, f"send: {exc}") from None

    def add_down_payload(self, offset: int, length: int, payload_bytes: int | None = None) -> None:
        self.ledger.add_down(offset, length, payload_bytes)

    # --- HTTP/1.1 ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        body_is_payload: bool = False,
    ) -> Response:
        """Send one request and read the whole response (Content-Length or chunked)."""
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + header_block(headers) + b"\r\n"
        spans = [(len(head), len(body))] if body_is_payload and body else []
        return await self.exchange(head + body, spans)

    async def exchange(self, data: bytes, payload_spans: Sequence[tuple[int, int]] = ()) -> Response:
        """Send one encoded request (``data``: head and body) and read its whole response.

        A kept-alive connection the server closed just as the request went out raises ``ConnectionReused``.
        """
        self.send_request(data, _nothing, payload_spans)
        return await self.finish_exchange()

    def send_request(
        self, data: bytes, on_done: Callable[[], None], payload_spans: Sequence[tuple[int, int]] = ()
    ) -> None:
        """Send one encoded request and read its response by callbacks, parsed by a ``ResponseParser`` sink as
        its bytes arrive: ``on_done()`` is called once, from the event loop, when the response is complete or
        the exchange failed (the connection's timeout, the stream's end, a malformed response); then
        ``take_response`` returns the one or raises the other. One exchange at a time; raises ClientError if
        the connection is already closed. No task switch, and one timer per connection rather than per request.
        """
        self.write(data, payload_spans)
        rx = self._rx
        self._head_at = rx.consumed
        self._sent_at = time.monotonic()
        self._on_done = on_done
        self._failure = None
        self._parser = ResponseParser()
        self._deadline = 0.0
        if not rx.write_paused:  # else the timeout starts once it is sent (``finish_exchange``), as it always did
            self._arm_deadline()
        rx.sink = self._feed_response
        rx.on_end = self._fail
        if rx.buffer or rx.eof:  # bytes that came before the request, or a connection already closed: rare
            rx.loop.call_soon(rx.feed_buffered, self._ended_response)

    async def finish_exchange(self) -> Response:
        """Wait for the exchange ``send_request`` started (after sending what is still queued) and take its
        response; whoever started it, the rest is done here."""
        rx = self._rx
        if self._on_done is not None:
            try:
                if not self._deadline:
                    if rx.write_paused:
                        await self.drain()
                    self._arm_deadline()
                if self._on_done is not None:
                    waiter = rx.loop.create_future()
                    self._on_done = functools.partial(_resolve, waiter)
                    await waiter
            finally:
                self.cancel_exchange()  # still in flight only when this task is cancelled or the send failed
        return self.take_response()

    def take_response(self) -> Response:
        """The response of the exchange that ended (``on_done``), or its error: ``ConnectionReused`` when a
        kept-alive connection failed before any of the response came, at once after the request went out."""
        exc = self._failure
        if exc is not None:
            self._failure = None
            if (
                self.responses
                and exc.kind is ErrorKind.DISCONNECT
                and self._rx.consumed == self._head_at
                and self._failed_after_s < REUSE_RACE_S
            ):
                raise ConnectionReused() from exc
            raise exc
        parser = self._parser
        assert parser is not None and parser.response is not None, "take_response before the exchange ended"
        return parser.response

    def completed_response(self) -> Response | None:
        """The response of the exchange that has just ended, None if it failed (``take_response`` raises it)."""
        parser = self._parser
        return parser.response if parser is not None and self._failure is None else None

    def cancel_exchange(self) -> None:
        """Forget the exchange in flight, if any (its waiter was cancelled, or the connection is closing)."""
        if self._on_done is not None:
            self._on_done = None
            rx = self._rx
            rx.sink = rx.on_end = rx.finished = None

    def _arm_deadline(self) -> None:
        timeout_s = self.timeout_s
        if timeout_s is None:
            self._deadline = float("inf")
            return
        self._deadline = time.monotonic() + timeout_s
        if self._timer is None:
            self._timer = self._rx.loop.call_later(timeout_s, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._on_done is None or self.closed or not self._deadline:
            return  # nothing in flight (the next request arms it again), or still being sent
        left_s = self._deadline - time.monotonic()
        if left_s > 0:  # armed for an earlier request, or a timer firing early: wait the rest
            self._timer = self._rx.loop.call_later(left_s, self._check_deadline)
            return
        rx = self._rx
        rx.sink = rx.on_end = None
        self._fail(ClientError(ErrorKind.TIMEOUT, f"no response within {self.timeout_s}s"))

    def _feed_response(self, data: bytes | bytearray, offset: int) -> int:
        parser = self._parser
        assert parser is not None
        n = parser.feed(data, offset)
        if parser.response is not None:
            rx = self._rx
            rx.sink = rx.on_end = None  # anything after the response waits in the buffer
            rx.finished = self._complete
        return n

    def _complete(self) -> None:
        on_done = self._on_done
        if on_done is not None:
            self._on_done = None
            if self._failure is None:
                self.responses += 1
            on_done()

    def _fail(self, exc: ClientError) -> None:
        self._failure = exc
        self._failed_after_s = time.monotonic() - self._sent_at
        self._complete()

    def _ended_response(self) -> ClientError:
        return self._ended("response")

    async def read_head(self) -> tuple[int, dict[str, str]]:
        """Status line and header lines of a response."""
        _, raw = await self.read_until(b"\r\n\r\n", "response headers")
        return parse_head(raw)

    async def wait_eof(self, timeout_s: float) -> bool:
        """Wait for the server's FIN after a ``Connection: close`` response; True if it came."""
        with contextlib.suppress(ClientError):
            _, data = await self.read_some("end of stream", timeout_s=timeout_s)
            return data == b""
        return False

    # --- closing -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close, reading the counters first; when the server closed first, include our FIN and its ACK."""
        if self.closed:
            return
        mark = self._read()
        if mark is not None and self.book.phase is Phase.IN and self._peer_closed():
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + GRACEFUL_CLOSE_WAIT_S
                while time.monotonic() < deadline and read_tcp_info(self._sock).state != TCP_CLOSE:
                    await asyncio.sleep(0.001)
                if read_tcp_info(self._sock).state == TCP_CLOSE:
                    mark = self._read(own_fin=True)
        self._finish(mark)

    def abort(self) -> None:
        """Close at once after an error (counters read first)."""
        if not self.closed:
            self._finish(self._read(), abort=True)

    def peer_closed(self) -> bool:
        """The server has closed its side (its FIN arrived): the connection cannot carry another request."""
        return self._rx.eof or self._peer_closed()

    def reusable(self, answered_now: bool = False) -> bool:
        """Open on both sides: the next request may go out on it. What ``ClientContext.reuse_or_connect`` checks
        first (a reset or a server's FIN make it False; that method then says which it was).

        ``answered_now``: a kept-alive response was read from it in this very callback, so the kernel's state is
        not read (one system call per request): only a FIN the loop has already read counts. A server that closes
        right after a keep-alive answer then fails the next request at once (``ConnectionReused``: retried on a
        new connection, not counted as an error) instead of being seen before it is sent."""
        if answered_now:
            return not self._rx.eof and not self.transport.is_closing()
        return not self.peer_closed() and not self.transport.is_closing()

    @property
    def write_paused(self) -> bool:
        """More is queued to send than the transport's high-water mark (``drain`` waits until it is not)."""
        return self._rx.write_paused

    def reset_while_idle(self) -> bool:
        """The connection was reset (not closed) while no request was in flight: a fault, not keep-alive expiry."""
        return isinstance(self._rx.exc, ConnectionError)

    def _peer_closed(self) -> bool:
        try:
            return peer_fin_received(self._sock)
        except OSError:
            return False

    def _finish(self, mark: _Mark | None, abort: bool = False) -> None:
        self.closed = True
        self.cancel_exchange()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        book = self.book
        if book.phase is Phase.IN:
            self.mark_end(mark)
        book.open.discard(self)
        if self._start is not None and self._end is not None:
            start, end = self._start, self._end
            book.records.append(
                ConnRecord(
                    client=self.client,
                    conn_seq=self.conn_seq,
                    opened_ns=self.opened_ns,
                    closed_ns=time.time_ns() if book.phase is Phase.IN else None,
                    bytes_down_tcp=end.down - start.down,
                    bytes_up_tcp=end.up - start.up,
                    segs_in=end.segs_in - start.segs_in,
                    segs_out=end.segs_out - start.segs_out,
                    bytes_down_payload=self.ledger.down_payload,
                    bytes_up_payload=self.ledger.up_payload,
                    timestamps=self._timestamps,
                    bytes_down_plain=end.plain_down - start.plain_down,
                    bytes_up_plain=end.plain_up - start.plain_up,
                    bytes_down_tls_handshake=self._handshake[0],
                    bytes_up_tls_handshake=self._handshake[1],
                    tls=self.tls,
                    alpn=self.alpn,
                    **h2_fields(self.h2_down, self.h2_up),
                )
            )
        with contextlib.suppress(Exception):
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        with contextlib.suppress(OSError):
            self._sock.close()


def h2_fields(down: H2Tally | None, up: H2Tally | None) -> dict[str, Any]:
    """The HTTP/2 columns of a connection record (all zero for HTTP/1.1)."""
    if down is None or up is None:
        return {}
    return {
        "bytes_down_h2_frame_headers": down.frame_headers,
        "bytes_up_h2_frame_headers": up.frame_headers,
        "bytes_down_hpack": down.hpack,
        "bytes_up_hpack": up.hpack,
        "bytes_down_h2_control": down.control,
        "bytes_up_h2_control": up.control,
        "h2_request_blocks": up.header_blocks,
        "h2_response_blocks": down.header_blocks,
        "h2_first_request_block": up.first_block,
    }


async def _handshake_bytes(sock: socket.socket) -> tuple[int, int]:
    """(down, up) TCP bytes of a TLS handshake that has just completed, nothing else written or read yet.

    Down: everything received so far (the server's flight; its session tickets come only after our Finished).
    Up: everything sent once our Finished has left (uvloop flushes it one loop iteration after the handshake
    completes), by ``tcpi_bytes_sent``: sent, whether or not acknowledged yet. (0, 0) if the kernel will not say.
    """
    try:
        down = read_tcp_info(sock).stream_offsets()[0]
        await asyncio.sleep(0)
        return down, read_tcp_info(sock).data_bytes_sent
    except (OSError, WireCountersUnavailable):
        return 0, 0


def _offsets(info: TcpInfo, own_fin: bool) -> tuple[int, int]:
    if own_fin:
        # State CLOSE: the peer's FIN counted one byte; our FIN too once acknowledged, but a peer that answers it
        # with a reset (HAProxy may) never acknowledges it: no more than the data sent, either way.
        return info.bytes_received - 1, max(0, min(info.bytes_acked - 1, info.data_bytes_sent))
    return info.stream_offsets()


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """Parse ``HTTP/1.1 200 OK\\r\\nName: value\\r\\n...\\r\\n\\r\\n`` into (status, lower-case headers)."""
    try:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        version, status_text = lines[0].split(" ", 2)[:2]
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        status = int(status_text)
    except (ValueError, IndexError):
        raise ClientError(ErrorKind.PROTOCOL, f"bad status line {raw[:60]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ClientError(ErrorKind.PROTOCOL, f"bad header line {line[:60]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers


def _nothing() -> None:
    pass


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Head(NamedTuple):
    """A response head as ``ResponseParser`` uses it (``headers`` is shared between equal heads: read only)."""

    status: int
    headers: dict[str, str]
    keep_alive: bool
    chunked: bool
    length: int | None  # Content-Length, None when absent


_HEADS: dict[bytes, Head] = {}
HEAD_CACHE_SIZE = 256


def read_head(raw: bytes) -> Head:
    """``parse_head`` and what the parser needs from the headers, remembered by the head's exact bytes: a
    server's answers repeat the same head (the same Date for a second, the same Content-Length for the same
    size), so most are one dictionary lookup. Raises ClientError as ``parse_head`` does, and for a
    Content-Length that is not a number."""
    head = _HEADS.get(raw)
    if head is not None:
        return head
    status, headers = parse_head(raw)
    length = None
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ClientError(ErrorKind.PROTOCOL, "Content-Length is not a number") from None
    head = Head(
        status,
        headers,
        headers.get("connection", "").lower() != "close",
        "chunked" in headers.get("transfer-encoding", "").lower(),
        length,
    )
    if len(_HEADS) >= HEAD_CACHE_SIZE:
        _HEADS.clear()
    _HEADS[raw] = head
    return head


class _State(Enum):
    HEAD = 0
    BODY = 1  # Content-Length
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    TRAILER = 4
    DONE = 5


class ResponseParser:
    """One HTTP/1.1 response read from the received stream as it arrives: the head, then a Content-Length or
    chunked body. Nothing here touches a socket: ``feed`` gets the unconsumed bytes and the stream offset of
    the first, returns how many it consumed (a ``Sink``); ``response`` is set once the response is complete.
    A body is copied once, when all of it is there. Raises ClientError on a malformed response.
    """

    __slots__ = ("_body_offset", "_headers", "_keep_alive", "_parts", "_remaining", "_state", "_status", "response")

    def __init__(self) -> None:
        self.response: Response | None = None
        self._state = _State.HEAD
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self._remaining = 0  # body bytes still to come (Content-Length), or the current chunk's with its CRLF
        self._body_offset = -1  # stream offset of the first body byte (chunked: of the first chunk's data)
        self._parts: list[bytes] = []

    def feed(self, data: bytes | bytearray, offset: int) -> int:
        pos = 0
        state = self._state
        if state is _State.DONE:
            return 0
        if state is _State.HEAD:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEADER_BYTES:
                    raise ClientError(ErrorKind.PROTOCOL, "response headers too long")
                return 0
            pos = end + 4
            head = read_head(bytes(data[:pos]))
            self._status, self._headers, self._keep_alive = head.status, head.headers, head.keep_alive
            if head.chunked:
                state = _State.CHUNK_SIZE
            elif head.length is not None:
                self._remaining = head.length
                self._body_offset = offset + pos
                if self._remaining == 0:
                    self._finish(b"")
                    return pos
                state = _State.BODY
            else:
                raise ClientError(ErrorKind.PROTOCOL, "response without Content-Length or chunked encoding")
            self._state = state
        if state is _State.BODY:
            end = pos + self._remaining
            if len(data) < end:
                return pos  # the rest of the body waits in the buffer, copied once when complete
            self._finish(bytes(data[pos:end]))
            return end
        while True:
            if state is _State.CHUNK_SIZE or state is _State.TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if len(data) - pos > MAX_HEADER_BYTES:
                        raise ClientError(ErrorKind.PROTOCOL, "chunk size line too long")
                    self._state = state
                    return pos
                line = bytes(data[pos:eol])
                pos = eol + 2
                if state is _State.TRAILER:  # no trailers expected: the final CRLF
                    if self._body_offset < 0:
                        self._body_offset = offset + pos
                    self._finish(b"".join(self._parts))
                    return pos
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ClientError(ErrorKind.PROTOCOL, f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    state = _State.TRAILER
                else:
                    state = _State.CHUNK_DATA
                    self._remaining = size + 2
            else:  # CHUNK_DATA
                end = pos + self._remaining
                if len(data) < end:
                    self._state = state
                    return pos
                if self._body_offset < 0:
                    self._body_offset = offset + pos
                self._parts.append(bytes(data[pos : end - 2]))
                pos = end
                state = _State.CHUNK_SIZE

    def _finish(self, body: bytes) -> None:
        self._state = _State.DONE
        self.response = Response(self._status, self._headers, body, self._body_offset, self._keep_alive, time.time_ns())
