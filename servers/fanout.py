"""Broadcast: each published event is framed once per framing and the same bytes go to every caught-up subscriber.

A streaming subscriber (a WebSocket or an SSE response) runs in one of two modes:

- **catching up** on its own: from its cursor through the history, one event at a time, each write preceded by
  ``servers.limits.make_room`` (the slow-client grace and drop). A subscriber that resumes (``?after=``,
  ``Last-Event-ID``) or fell behind starts here, exactly as every subscriber did before broadcasting existed;
- **in the broadcast** once it has caught up: it waits in ``Fanout.join`` while ``Fanout.publish`` (called by the
  feed inside ``publish_tick``) frames the tick's events once per channel and writes the same bytes to each
  member's transport. No coroutine wakes per subscriber and event, no per-subscriber framing, and nothing per
  subscriber is read but its transport: members share the channel's cursor and send-buffer bound.

A subscriber leaves the broadcast for the catch-up path when a write would not fit its send buffer (there
``make_room`` gives it the grace and drops it if it stays full), when its transport is closing, when it is about to
send a close frame (``Fanout.leave``), or when the feed closes; the catch-up path then decides what happens, with
the same counters as before (``deliveries``, ``slow_client_drops``). A channel with a heartbeat (SSE) also lets a
member go after ``idle_s`` without a write, with one timer per channel rather than one per subscriber.

A member whose transport holds nothing unsent is written with one ``os.write`` on its socket's descriptor, the
system call the transport's ``write`` would make, without the transport's bookkeeping around it (a list of
buffers allocated and freed per write); whatever the kernel does not take (a partial write, EAGAIN, an error) goes
to the transport's ``write``, which queues it, or meets the same error and closes the connection, as before. The
bytes on the wire and their order are the same: the transport is only bypassed when it has nothing queued.
"""

from __future__ import annotations

import asyncio
import os
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


def socket_fd(transport: Transport | None) -> int:
    """The descriptor of a transport's socket, or -1 when it has none (the broadcast then writes through it)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1


def write_rest(transport: Transport, data: bytes, sent: int) -> None:
    """After ``os.write`` took ``sent`` bytes of ``data`` (-1: it failed), hand the rest to the transport: it queues
    what the kernel did not take, or meets the error itself and closes the connection, as its own write would."""
    transport.write(data if sent <= 0 else memoryview(data)[sent:])


class Subscriber:
    """One streaming connection as the broadcast sees it: where to write, its cursor, its send-buffer bound."""

    __slots__ = ("cursor", "fd", "joined", "limit", "transport", "wake")

    def __init__(self, transport: Transport, cursor: int, limit: int) -> None:
        self.transport = transport
        self.fd = socket_fd(transport)  # written directly while the transport holds nothing unsent
        self.cursor = cursor  # the last seq written to it (while it is a member: its channel's ``seq``)
        self.limit = limit  # server.send_buffer_bytes
        self.joined = 0.0  # loop time it last joined its channel
        self.wake: asyncio.Future[bool] | None = None  # resolved when it leaves: True to catch up, False when idle


@dataclass(eq=False)
class Channel:
    """The subscribers that get the same bytes: one framing, one ``deliveries`` counter, one send-buffer bound.

    Members are kept in the order they joined, keyed by their transport, which with its descriptor is all
    ``Fanout.publish`` touches per member: every member has been written every event up to ``seq`` (their shared
    cursor) and has the channel's ``limit``, so nothing else per subscriber is read or written while the broadcast
    goes out.
    """

    name: str  # the transport's name in /stats deliveries
    frame: Callable[[Event], bytes]
    limit: int  # server.send_buffer_bytes
    idle_s: float | None = None  # a member nothing was written to for this long leaves for a heartbeat (SSE)
    members: dict[Transport, Subscriber] = field(default_factory=dict)
    seq: int = 0  # the last seq written to every member
    last_publish: float = float("-inf")  # loop time of the last publication written to this channel
    idle_timer: asyncio.TimerHandle | None = None  # one per channel, at its earliest member's idle deadline


def silent_since(joined: float, last_publish: float) -> float:
    """Since when nothing was written to a member: its join, or the channel's last publication if later."""
    return max(joined, last_publish)


def idle_due(joined: float, last_publish: float, idle_s: float, now: float, slack_s: float = 0.0) -> bool:
    """Has a member been silent for ``idle_s`` at ``now``? ``slack_s`` absorbs a timer that fires that much early."""
    return silent_since(joined, last_publish) + idle_s <= now + slack_s


# uvloop rounds timers to whole milliseconds and may run one up to ~1 ms early: a deadline that close counts as due,
# so the idle check never spins on an early timer.
TIMER_SLACK_S = 0.001


class Fanout:
    """The channels of one server, fed by ``Feed.publish_tick`` (see the module docstring)."""

    def __init__(self, feed: Feed, deliveries: Counter[str]) -> None:
        self.deliveries = deliveries  # /stats deliveries, per transport
        self.channels: dict[tuple[str, str, int, float | None], Channel] = {}
        feed.listeners.append(self.publish)
        feed.close_listeners.append(self.close)

    def channel(
        self, framing: str, name: str, frame: Callable[[Event], bytes], limit: int, idle_s: float | None = None
    ) -> Channel:
        key = (framing, name, limit, idle_s)
        if key not in self.channels:
            self.channels[key] = Channel(name, frame, limit, idle_s)
        return self.channels[key]

    def publish(self, events: list[Event]) -> None:
        """Write one tick's events to every caught-up subscriber of every channel."""
        if not events:
            return
        first, last, count = events[0].seq, events[-1].seq, len(events)
        for channel in self.channels.values():
            members = channel.members
            if not members:
                continue
            channel.last_publish = asyncio.get_running_loop().time()
            if channel.seq != first - 1:  # the members missed a publication (never expected): they catch up alone
                _release_all(channel, True)
                continue
            data = b"".join(channel.frame(e) for e in events)  # framed once for every subscriber
            size, limit = len(data), channel.limit
            leaving = []
            write = os.write
            for transport, sub in members.items():
                if transport.is_closing():
                    leaving.append(transport)
                    continue
                buffered = transport.get_write_buffer_size()
                if buffered or sub.fd < 0:
                    if is_full(buffered, size, limit):
                        leaving.append(transport)  # the catch-up path gives it the grace, or drops it
                        continue
                    transport.write(data)
                    continue
                try:
                    sent = write(sub.fd, data)  # nothing queued: the system call the transport would make
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = -1
                if sent != size:
                    write_rest(transport, data, sent)
            self.deliveries[channel.name] += (len(members) - len(leaving)) * count
            for transport in leaving:
                _release(channel, members[transport], True)  # its cursor: the seq before this publication
            channel.seq = last

    def close(self) -> None:
        """The feed closed: every subscriber returns to its own path, which ends the stream."""
        for channel in self.channels.values():
            _release_all(channel, True)
            if channel.idle_timer is not None:
                channel.idle_timer.cancel()
                channel.idle_timer = None

    def leave(self, channel: Channel, sub: Subscriber) -> None:
        """Take ``sub`` out of the broadcast at once (a WebSocket about to send its close frame); its ``join``
        returns True."""
        if channel.members.get(sub.transport) is sub:
            _release(channel, sub, True)

    async def join(self, channel: Channel, sub: Subscriber) -> bool:
        """Stay in the broadcast until the subscriber must catch up on its own (True), or until nothing was
        written to it for the channel's ``idle_s`` (False: time for a heartbeat). ``sub.cursor`` must be the feed's
        latest seq (the caller found nothing after it)."""
        loop = asyncio.get_running_loop()
        if sub.cursor != channel.seq:
            # Every member is at the feed's latest seq, as is a caught-up joiner, so this happens only to an empty
            # channel (or members left behind, which then catch up on their own).
            _release_all(channel, True)
            channel.seq = sub.cursor
        sub.wake = wake = loop.create_future()
        sub.joined = loop.time()
        channel.members[sub.transport] = sub
        if channel.idle_s is not None and channel.idle_timer is None:
            _arm_idle_timer(channel, loop)
        try:
            return await wake
        finally:
            if channel.members.get(sub.transport) is sub:  # cancelled while a member (its connection went)
                del channel.members[sub.transport]
                sub.cursor = channel.seq
            sub.wake = None


def _release(channel: Channel, sub: Subscriber, catch_up: bool) -> None:
    del channel.members[sub.transport]
    sub.cursor = channel.seq
    if sub.wake is not None and not sub.wake.done():
        sub.wake.set_result(catch_up)


def _release_all(channel: Channel, catch_up: bool) -> None:
    for sub in list(channel.members.values()):
        _release(channel, sub, catch_up)


def _arm_idle_timer(channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
    """One timer per channel, at its first member's idle deadline (members are in join order, so that member's is
    the earliest: a publication restarts every member's silence at once)."""
    assert channel.idle_s is not None
    first = next(iter(channel.members.values()))
    when = silent_since(first.joined, channel.last_publish) + channel.idle_s
    channel.idle_timer = loop.call_at(when, _idle_check, channel, loop)


def _idle_check(channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
    """Members silent for ``idle_s`` leave for a heartbeat (their ``join`` returns False); then the timer is set for
    the next deadline."""
    channel.idle_timer = None
    if channel.idle_s is None:
        return
    now, due = loop.time(), []
    for sub in channel.members.values():  # in join order: the first that is not due ends the scan
        if not idle_due(sub.joined, channel.last_publish, channel.idle_s, now, TIMER_SLACK_S):
            break
        due.append(sub)
    for sub in due:
        _release(channel, sub, False)
    if channel.members:
        _arm_idle_timer(channel, loop)
