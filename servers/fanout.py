"""Broadcast: each published event is framed once per framing and the same bytes go to every caught-up subscriber.

A streaming subscriber (a WebSocket or an SSE response) runs in one of two modes:

- **catching up** on its own: from its cursor through the history, one event at a time, each write preceded by
  ``servers.limits.make_room`` (the slow-client grace and drop). A subscriber that resumes (``?after=``,
  ``Last-Event-ID``) or fell behind starts here, exactly as every subscriber did before broadcasting existed;
- **in the broadcast** once it has caught up: it waits in ``Fanout.join`` while ``Fanout.publish`` (called by the
  feed inside ``publish_tick``) frames the tick's events once per channel and writes the same bytes to each
  subscriber's transport. No coroutine wakes per subscriber and event, no per-subscriber framing.

A subscriber leaves the broadcast for the catch-up path when a write would not fit its send buffer (there
``make_room`` gives it the grace and drops it if it stays full), when its cursor does not precede the
publication, when its transport is closing, or when the feed closes; the catch-up path then decides what happens,
with the same counters as before (``deliveries``, ``slow_client_drops``).
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from servers.feed import Event, Feed
from servers.limits import Transport, is_full


def ws_text_frame(body: bytes) -> bytes:
    """An unmasked, final text frame holding ``body`` (RFC 6455 §5.2), as a server sends it."""
    n = len(body)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + body
    if n < 0x10000:
        return struct.pack("!BBH", 0x81, 126, n) + body
    return struct.pack("!BBQ", 0x81, 127, n) + body


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (RFC 9112 §7.1), as aiohttp frames a chunked response's writes."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Subscriber:
    """One streaming connection as the broadcast sees it: where to write, its cursor, its send-buffer bound."""

    __slots__ = ("closed", "cursor", "limit", "transport", "wake")

    def __init__(self, transport: Transport, cursor: int, limit: int, closed: Callable[[], bool] | None = None) -> None:
        self.transport = transport
        self.cursor = cursor  # the last seq written to it
        self.limit = limit  # server.send_buffer_bytes
        self.closed = closed  # True once nothing more may be sent (a WebSocket whose close frame went out)
        self.wake: asyncio.Future[None] | None = None


@dataclass
class Channel:
    """The subscribers that get the same bytes: one framing, one ``deliveries`` counter."""

    name: str  # the transport's name in /stats deliveries
    frame: Callable[[Event], bytes]
    subscribers: set[Subscriber] = field(default_factory=set)
    last_publish: float = float("-inf")  # loop time of the last publication written to this channel


class Fanout:
    """The channels of one server, fed by ``Feed.publish_tick`` (see the module docstring)."""

    def __init__(self, feed: Feed, deliveries: Counter[str]) -> None:
        self.deliveries = deliveries  # /stats deliveries, per transport
        self.channels: dict[tuple[str, str], Channel] = {}
        feed.listeners.append(self.publish)
        feed.close_listeners.append(self.close)

    def channel(self, framing: str, name: str, frame: Callable[[Event], bytes]) -> Channel:
        key = (framing, name)
        if key not in self.channels:
            self.channels[key] = Channel(name, frame)
        return self.channels[key]

    def publish(self, events: list[Event]) -> None:
        """Write one tick's events to every caught-up subscriber of every channel."""
        if not events:
            return
        first, last, count = events[0].seq, events[-1].seq, len(events)
        for channel in self.channels.values():
            if not channel.subscribers:
                continue
            channel.last_publish = asyncio.get_running_loop().time()
            data = b"".join(channel.frame(e) for e in events)  # framed once for every subscriber
            size = len(data)
            behind = first - 1
            leaving = []
            written = 0
            for sub in channel.subscribers:
                transport = sub.transport
                if sub.cursor != behind or transport.is_closing() or (sub.closed is not None and sub.closed()):
                    leaving.append(sub)
                    continue
                if is_full(transport.get_write_buffer_size(), size, sub.limit):
                    leaving.append(sub)  # the catch-up path gives it the grace, or drops it
                    continue
                transport.write(data)
                sub.cursor = last
                written += 1
            self.deliveries[channel.name] += written * count
            for sub in leaving:
                _release(channel, sub)

    def close(self) -> None:
        """The feed closed: every subscriber returns to its own path, which ends the stream."""
        for channel in self.channels.values():
            for sub in list(channel.subscribers):
                _release(channel, sub)

    async def join(self, channel: Channel, sub: Subscriber, idle_s: float | None = None) -> bool:
        """Stay in the broadcast until the subscriber must catch up on its own (True), or until nothing was
        written to it for ``idle_s`` (False: time for a heartbeat)."""
        loop = asyncio.get_running_loop()
        sub.wake = wake = loop.create_future()
        channel.subscribers.add(sub)
        joined = loop.time()
        try:
            if idle_s is None:
                await wake
                return True
            while True:
                silent_since = max(joined, channel.last_publish)
                remaining = silent_since + idle_s - loop.time()
                if remaining <= 0:
                    return False
                done, _ = await asyncio.wait({wake}, timeout=remaining)
                if done:
                    return True
        finally:
            channel.subscribers.discard(sub)
            sub.wake = None


def _release(channel: Channel, sub: Subscriber) -> None:
    channel.subscribers.discard(sub)
    if sub.wake is not None and not sub.wake.done():
        sub.wake.set_result(None)
