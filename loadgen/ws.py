"""WebSocket: the RFC 6455 handshake on ``GET /ws``, then frames; reconnects resume with ``?after=N``.

Feed: every text frame from the server is one event. Echo (``/ws?mode=echo``, no feed): each client sends a
masked text frame every ``send_interval_s`` and the server sends it back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
import time
import zlib
from dataclasses import dataclass

from loadgen.client import ClientContext, ClientState, stale_resume_point
from loadgen.conn import ClientError, Connection, ErrorKind
from loadgen.echo import echo_message, echo_schedule
from loadgen.headers import header_block, ws_key

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DEFLATE_TAIL = b"\x00\x00\xff\xff"


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None) -> tuple[bytes, int]:
    """One final frame; returns (frame bytes, offset of the payload in it). Client frames carry a mask key."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    if n <= 125:
        head.append(mask_bit | n)
    elif n <= 0xFFFF:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if mask_key is None:
        return bytes(head) + payload, len(head)
    head += mask_key
    return bytes(head) + mask(payload, mask_key), len(head)


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key (RFC 6455 §5.3); masking twice restores the payload."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


@dataclass(frozen=True)
class FrameHead:
    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    length_code: int  # 0..125, or 126 / 127 meaning a 2 / 8 byte extended length follows


def parse_frame_head(two: bytes) -> FrameHead:
    b0, b1 = two[0], two[1]
    return FrameHead(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F)


def split_frame(data: bytes | bytearray, pos: int) -> tuple[int, int, int, bytes] | None:
    """The frame starting at ``data[pos]``: (first header byte, payload start, payload end, mask key or b"");
    None while the frame is not wholly in ``data`` (RFC 6455 §5.2)."""
    end = len(data)
    if end - pos < 2:
        return None
    b1 = data[pos + 1]
    length = b1 & 0x7F
    start = pos + 2
    if length == 126:
        if end - start < 2:
            return None
        length = (data[start] << 8) | data[start + 1]
        start += 2
    elif length == 127:
        if end - start < 8:
            return None
        length = int.from_bytes(data[start : start + 8], "big")
        start += 8
    key = b""
    if b1 & 0x80:
        if end - start < 4:
            return None
        key = bytes(data[start : start + 4])
        start += 4
    if start + length > end:
        return None
    return data[pos], start, start + length, key


def send_frame(conn: Connection, opcode: int, payload: bytes, is_payload: bool = False) -> None:
    frame, at = encode_frame(opcode, payload, os.urandom(4))
    conn.write(frame, [(at, len(payload))] if is_payload and payload else [])


async def handshake(ctx: ClientContext, client: ClientState, conn: Connection, target: str) -> bool:
    """Upgrade ``conn``; True when permessage-deflate was negotiated."""
    key = ws_key(os.urandom(16))
    headers = ctx.plan.profile.websocket_headers(
        ctx.plan.hostport, key, offer_deflate=ctx.plan.ws_compress, scheme=ctx.plan.scheme
    )
    conn.write(f"GET {target} HTTP/1.1\r\n".encode() + header_block(headers) + b"\r\n")
    await conn.drain()
    status, resp = await conn.read_head()
    if status == 410:
        ctx.stale_resumes += 1
        _, body = await conn.read_exactly(int(resp.get("content-length", "0")), "410 body")
        client.cursor = stale_resume_point(body)
        raise ClientError(ErrorKind.HTTP_STATUS, f"410 Gone for {target} (resume point left the history)")
    if status != 101:
        raise ClientError(ErrorKind.HTTP_STATUS, f"{status} for the WebSocket handshake on {target}")
    if resp.get("sec-websocket-accept") != accept_value(key):
        raise ClientError(ErrorKind.PROTOCOL, "wrong Sec-WebSocket-Accept")
    client.ready()
    return "permessage-deflate" in resp.get("sec-websocket-extensions", "")


class FrameSink:
    """A WebSocket's receive path (its ``consume`` is a ``Connection`` sink): every whole frame of each received chunk is parsed
    where it lies, text frames are delivered, pings answered; a close frame or a protocol error ends it.

    Runs once per message, so the common frame (final, uncompressed text, unmasked, under 64 KiB: every event
    pushbench's server sends) is read inline; anything else goes through ``split_frame`` and ``_other``."""

    def __init__(self, ctx: ClientContext, client: ClientState, conn: Connection, deflate: bool, feed: bool) -> None:
        self.ctx = ctx
        self.deliver = ctx.deliver_event  # bound once: it is called once per message
        self.client = client
        self.conn = conn
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflate else None
        self.feed = feed

    def consume(self, data: bytes | bytearray, offset: int) -> int:
        received_ns = time.time_ns()
        deliver, client, conn = self.deliver, self.client, self.conn
        pos, size = 0, len(data)
        while size - pos >= 2:
            b0, length = data[pos], data[pos + 1]
            start = pos + 2
            if length == 126:  # 126..65535 bytes, unmasked
                if size - start < 2:
                    break
                length = data[start] << 8 | data[start + 1]
                start += 2
            elif length > 126:  # an 8-byte length, or masked (a server must not mask): the general parser
                if split_frame(data, pos) is None:
                    break
                pos = self._other(data, pos, offset, received_ns)
                continue
            end = start + length
            if end > size:
                break
            if b0 == 0x81:  # FIN, no RSV bits, text: one uncompressed event
                seq = deliver(client, conn, data[start:end], offset + start, length, received_ns)
                if self.feed:
                    client.cursor = seq
                pos = end
            else:
                pos = self._other(data, pos, offset, received_ns)
        return pos

    def _other(self, data: bytes | bytearray, pos: int, offset: int, received_ns: int) -> int:
        """The frame at ``data[pos]`` (wholly received) that is not a plain text frame; returns where it ends."""
        frame = split_frame(data, pos)
        assert frame is not None
        b0, start, end, key = frame
        payload = bytes(data[start:end]) if not key else mask(bytes(data[start:end]), key)
        opcode = b0 & 0x0F
        if opcode == OP_TEXT:
            if not b0 & 0x80:
                raise ClientError(ErrorKind.PROTOCOL, "fragmented message (pushbench's server never fragments)")
            payload_bytes = None
            if b0 & 0x40:
                if self.inflater is None:
                    raise ClientError(ErrorKind.PROTOCOL, "compressed frame without permessage-deflate")
                payload = self.inflater.decompress(payload + DEFLATE_TAIL)
                payload_bytes = len(payload)
            seq = self.ctx.deliver_event(
                self.client, self.conn, payload, offset + start, end - start, received_ns, payload_bytes
            )
            if self.feed:
                self.client.cursor = seq
        elif opcode == OP_PING:
            send_frame(self.conn, OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            with contextlib.suppress(ClientError):
                send_frame(self.conn, OP_CLOSE, payload[:2])
            raise ClientError(ErrorKind.DISCONNECT, f"server closed the WebSocket with {code}")
        elif opcode != OP_PONG:
            raise ClientError(ErrorKind.PROTOCOL, f"unexpected opcode {opcode}")
        return end


async def receive(ctx: ClientContext, client: ClientState, conn: Connection, deflate: bool, feed: bool) -> None:
    """Deliver text frames until the connection ends (a ClientError says why)."""
    conn.timeout_s = None  # a quiet feed is not an error; the cell's stop ends the wait
    await conn.run_sink(FrameSink(ctx, client, conn, deflate, feed).consume)


async def run_feed(ctx: ClientContext, client: ClientState) -> None:
    async def session(conn: Connection) -> Connection | None:
        path = ctx.plan.transport_spec.path
        target = path if client.cursor is None else f"{path}?after={client.cursor}"
        await receive(ctx, client, conn, await handshake(ctx, client, conn, target), feed=True)
        return conn

    await ctx.run_sessions(client, session)


async def _send_echoes(ctx: ClientContext, client: ClientState, conn: Connection) -> None:
    async for seq, intended_ns in echo_schedule(ctx, client):
        send_frame(conn, OP_TEXT, echo_message(client, seq, intended_ns, ctx.plan.payload_bytes), is_payload=True)
        await conn.drain()


async def _echo_session(ctx: ClientContext, client: ClientState, conn: Connection, deflate: bool) -> None:
    """A sender on the schedule and a receiver on one open WebSocket, until one of them fails (its error is
    raised) or the cell stops. Both tasks are finished and their outcomes retrieved before this returns, also
    when it is cancelled: an orphaned receiver would fail when the connection is aborted at teardown, with an
    exception nobody retrieves."""
    sender = asyncio.create_task(_send_echoes(ctx, client, conn))
    receiver = asyncio.create_task(receive(ctx, client, conn, deflate, feed=False))
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sender.cancel()
        receiver.cancel()
        outcomes = await asyncio.gather(sender, receiver, return_exceptions=True)
    for task, outcome in zip((sender, receiver), outcomes, strict=True):
        if task in done and isinstance(outcome, Exception):
            raise outcome


async def run_echo(ctx: ClientContext, client: ClientState) -> None:
    """Echo over one WebSocket: a sender on the schedule and a receiver matching replies by seq."""

    async def session(conn: Connection) -> Connection | None:
        await _echo_session(
            ctx, client, conn, await handshake(ctx, client, conn, f"{ctx.plan.transport_spec.path}?mode=echo")
        )
        return conn

    await ctx.run_sessions(client, session)
