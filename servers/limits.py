"""Bounded per-connection send buffers: a client that stops reading is dropped, not buffered for.

aiohttp's ``write()`` awaits ``drain()`` once the transport holds more than its high-water mark (64 KiB by
default), so a stalled reader used to park its push coroutine forever: memory stayed bounded, but the
connection was never dropped and never counted. Instead, each streaming connection gets a high-water mark
above ``server.send_buffer_bytes`` (so a write never blocks), and before every write the push loop checks
that the unsent bytes plus the next message still fit in ``send_buffer_bytes``. When they do not and the
buffer does not drain within ``FULL_GRACE_S``, the client is dropped (``slow_client_drops`` in /stats) and
can resume by cursor when it reads again. Everyone else is untouched: each subscriber has its own cursor
into the shared history, no per-client queue.

Also here: the close codes a WebSocket peer may send (RFC 6455 §7.4), which aiohttp checks only in part.
"""

from __future__ import annotations

import asyncio
from typing import Any

# Slack for framing (chunked-encoding lines, WebSocket headers) above the limit, so the transport never
# pauses the writer before ``make_room`` has had the chance to drop the client.
FRAMING_SLACK_BYTES = 64 * 1024
# A send buffer that stays full this long belongs to a client that is not reading (see make_room).
FULL_GRACE_S = 1.0
FULL_POLL_S = 0.01


class SlowClient(Exception):
    """The client's send buffer is full: it is not reading fast enough (or at all)."""

    def __init__(self, buffered_bytes: int, next_bytes: int, limit_bytes: int) -> None:
        self.buffered_bytes = buffered_bytes
        super().__init__(
            f"send buffer full: {buffered_bytes} bytes unsent + {next_bytes} to send > {limit_bytes} "
            "(server.send_buffer_bytes)"
        )


# uvloop's transports have the WriteTransport methods but are not registered as its subclasses.
Transport = asyncio.WriteTransport | Any


def bound_send_buffer(transport: Transport | None, limit_bytes: int) -> None:
    """Let up to ``limit_bytes`` (+ framing) queue without pausing the writer; ``make_room`` enforces it."""
    if transport is not None and not transport.is_closing():
        high = limit_bytes + FRAMING_SLACK_BYTES
        transport.set_write_buffer_limits(high=high, low=high // 4)


def unsent_bytes(transport: Transport | None) -> int:
    """Bytes accepted by the transport but not yet taken by the kernel (0 once the connection is gone)."""
    if transport is not None and not transport.is_closing():
        return int(transport.get_write_buffer_size())
    return 0


def is_full(buffered_bytes: int, next_bytes: int, limit_bytes: int) -> bool:
    """No room for ``next_bytes`` more. A message larger than the bound still goes out into an empty buffer,
    so a big event is never mistaken for a slow client; memory stays below ``limit_bytes`` + one message."""
    return buffered_bytes > 0 and buffered_bytes + next_bytes > limit_bytes


async def make_room(
    transport: Transport | None, next_bytes: int, limit_bytes: int, grace_s: float = FULL_GRACE_S
) -> None:
    """Return once ``next_bytes`` fit in the send buffer; raise SlowClient if it stays full for ``grace_s``.

    The common case (room to spare) returns without awaiting anything. A full buffer gets a short grace:
    a burst of events is written without yielding to the loop, so even a client that reads as fast as it
    can is briefly behind; one that has stopped reading is not drained within the grace and is dropped.
    """
    buffered = unsent_bytes(transport)
    if not is_full(buffered, next_bytes, limit_bytes):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while loop.time() < deadline:
        await asyncio.sleep(FULL_POLL_S)
        buffered = unsent_bytes(transport)
        if not is_full(buffered, next_bytes, limit_bytes):
            return
    raise SlowClient(buffered, next_bytes, limit_bytes)


def drop(transport: Transport | None) -> None:
    """Cut a slow client at once: a close frame or a last chunk would only queue behind what it does not read."""
    if transport is not None and not transport.is_closing():
        transport.abort()


def is_valid_close_code(code: int) -> bool:
    """Close codes a peer may send (RFC 6455 §7.4.1-2, IANA registry); 0 stands for a close with no code.

    1004 is reserved, 1005/1006/1015 must never be sent on the wire, 1016-2999 are unassigned, and codes
    below 1000 or above 4999 are not close codes at all.
    """
    return code == 0 or 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
