"""The broadcast (servers.fanout): its framing is what aiohttp would write; members, leavers and heartbeats over real
loopback connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import pytest
import uvloop
from conftest import run, running_server, timeout
from rawwire import OP_CLOSE, OP_TEXT, RawWebSocket, client_frame

from servers.fanout import TIMER_SLACK_S, Channel, Fanout, Subscriber, http_chunk, idle_due, silent_since, ws_text_frame
from servers.feed import Feed
from servers.ws import SOCKETS, close_all


def test_ws_text_frame_header_sizes_rfc6455() -> None:
    assert ws_text_frame(b"hi") == b"\x81\x02hi"
    assert ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert ws_text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)
    assert len(ws_text_frame(b"x" * 145)) == 145 + 4  # a 100-byte-payload event: 4-byte header


def test_http_chunk_hex_size_and_crlf() -> None:
    assert http_chunk(b"id: 1\ndata: {}\n\n") == b"10\r\nid: 1\ndata: {}\n\n\r\n"
    assert http_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"


def test_a_member_is_silent_since_its_join_or_the_last_publication_whichever_is_later() -> None:
    assert silent_since(joined=10.0, last_publish=4.0) == 10.0
    assert silent_since(joined=3.0, last_publish=4.0) == 4.0
    assert idle_due(joined=10.0, last_publish=4.0, idle_s=15.0, now=25.0)  # 10 + 15 <= 25
    assert not idle_due(joined=10.0, last_publish=4.0, idle_s=15.0, now=24.9)
    assert not idle_due(joined=3.0, last_publish=12.0, idle_s=15.0, now=26.0)  # silent since 12: due at 27
    assert idle_due(joined=3.0, last_publish=12.0, idle_s=15.0, now=26.9995, slack_s=0.001)


Pairs = tuple[list[asyncio.Transport], list[asyncio.StreamReader], list[asyncio.StreamWriter], asyncio.Server]


async def _pairs(n: int) -> Pairs:
    """``n`` real loopback connections: the server side's transports, the client side's readers and writers."""
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.put_nowait(cast(asyncio.Transport, transport))  # uvloop's are not registered as subclasses

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    return [await accepted.get() for _ in range(n)], [r for r, _ in clients], [w for _, w in clients], server


async def _close(pairs: Pairs) -> None:
    transports, _, writers, server = pairs
    for t in transports:
        t.close()
    for w in writers:
        w.close()
        await w.wait_closed()
    server.close()
    await server.wait_closed()


def test_publish_writes_the_same_bytes_to_every_member_and_leavers_keep_their_cursor() -> None:
    async def body() -> None:
        feed = Feed(rate_hz=1, payload_bytes=10)
        deliveries: Counter[str] = Counter()
        fanout = Fanout(feed, deliveries)
        channel = fanout.channel("ws", "ws", lambda e: ws_text_frame(e.body), limit=1 << 20)
        pairs = await _pairs(3)
        transports, readers = pairs[0], pairs[1]
        subs = [Subscriber(t, 0, 1 << 20) for t in transports]
        joins = [asyncio.create_task(fanout.join(channel, s)) for s in subs]
        await asyncio.sleep(0)
        e1, e2 = feed.publish_tick(1), feed.publish_tick(2)  # two ticks, one event each
        expected = ws_text_frame(e1[0].body) + ws_text_frame(e2[0].body)
        for r in readers:
            assert await asyncio.wait_for(r.readexactly(len(expected)), timeout(2)) == expected
        assert deliveries["ws"] == 6 and channel.seq == 2
        fanout.leave(channel, subs[0])  # a WebSocket about to send its close frame
        assert await joins[0] is True and subs[0].cursor == 2
        transports[1].close()  # closing: left out of the next publication, its cursor stays at what it got
        e3 = feed.publish_tick(3)
        assert await joins[1] is True and subs[1].cursor == 2
        assert await asyncio.wait_for(readers[2].readexactly(len(ws_text_frame(e3[0].body))), timeout(2))
        assert deliveries["ws"] == 7 and list(channel.members.values()) == [subs[2]]
        joins[2].cancel()  # the connection went: it leaves with every event it was written
        await asyncio.gather(joins[2], return_exceptions=True)
        assert subs[2].cursor == 3 and not channel.members
        await _close(pairs)

    run(body())


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(body(), timeout(30)))


@dataclass
class Broadcast:
    """A feed and its WebSocket channel with ``n`` members over real loopback connections, all in the broadcast."""

    feed: Feed
    deliveries: Counter[str]
    fanout: Fanout
    channel: Channel
    pairs: Pairs
    subs: list[Subscriber]
    joins: list[asyncio.Task[bool]]

    @classmethod
    async def start(cls, n: int, payload_bytes: int, limit: int) -> Broadcast:
        feed, deliveries = Feed(rate_hz=1, payload_bytes=payload_bytes), Counter[str]()
        fanout = Fanout(feed, deliveries)
        channel = fanout.channel("ws", "ws", lambda e: ws_text_frame(e.body), limit=limit)
        pairs = await _pairs(n)
        subs = [Subscriber(t, 0, limit) for t in pairs[0]]
        joins = [asyncio.create_task(fanout.join(channel, s)) for s in subs]
        await asyncio.sleep(0)
        return cls(feed, deliveries, fanout, channel, pairs, subs, joins)

    async def stop(self) -> None:
        for join in self.joins:
            join.cancel()
        await asyncio.gather(*self.joins, return_exceptions=True)
        await _close(self.pairs)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_what_the_kernel_does_not_take_is_queued_by_the_transport_in_order(loop: str) -> None:
    # A member that does not read: each 300-kB event is written to its descriptor until the kernel's buffers are
    # full, the rest goes to the transport (a partial write, then EAGAIN), and later events queue behind it. When
    # it reads, it gets every frame whole and in order: the bytes the transport alone would have sent.
    async def body() -> None:
        b = await Broadcast.start(1, payload_bytes=300_000, limit=1 << 26)
        (transport,), (reader,), (sub,) = b.pairs[0], b.pairs[1], b.subs
        assert sub.fd == transport.get_extra_info("socket").fileno() >= 0
        frames = b"".join(ws_text_frame(b.feed.publish_tick(i)[0].body) for i in range(1, 21))  # about 6 MB
        assert transport.get_write_buffer_size() > 0  # the kernel did not take it all: the transport holds the rest
        assert await asyncio.wait_for(reader.readexactly(len(frames)), timeout(10)) == frames
        assert b.deliveries["ws"] == 20 and b.channel.members == {transport: sub}
        await b.stop()

    run_on(loop, body)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_write_to_a_reset_connection_closes_its_transport_and_the_member_leaves(loop: str) -> None:
    # The peer resets the connection (SO_LINGER 0): the next os.write fails, the transport meets the same error on
    # the rest and closes, and the next publication leaves the member out.
    async def body() -> None:
        b = await Broadcast.start(2, payload_bytes=10, limit=1 << 20)
        transports, readers, writers = b.pairs[0], b.pairs[1], b.pairs[2]
        transports[0].pause_reading()  # the server side learns of the reset from its next write, not a read
        sock = writers[0].get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writers[0].transport.abort()  # RST
        await asyncio.sleep(0.05)
        for seq in (1, 2, 3):
            b.feed.publish_tick(seq)
            await asyncio.sleep(0.05)
        assert transports[0].is_closing()
        assert await asyncio.wait_for(b.joins[0], timeout(2)) is True  # left for the catch-up path
        frames = b"".join(ws_text_frame(e.body) for e in b.feed.events_after(0))
        assert await asyncio.wait_for(readers[1].readexactly(len(frames)), timeout(2)) == frames
        await b.stop()

    run_on(loop, body)


def test_members_leave_for_a_heartbeat_after_idle_s_of_silence_in_join_order() -> None:
    async def body() -> None:
        feed = Feed(rate_hz=1, payload_bytes=10)
        fanout = Fanout(feed, Counter())
        channel = fanout.channel("sse", "sse", lambda e: e.body, limit=1 << 20, idle_s=0.2)
        pairs = await _pairs(2)
        transports = pairs[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(fanout.join(channel, Subscriber(transports[0], 0, 1 << 20)))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(fanout.join(channel, Subscriber(transports[1], 0, 1 << 20)))
        assert await first is False  # silent since its join: idle at 0.2 s
        assert 0.2 - TIMER_SLACK_S <= loop.time() - started < timeout(0.3)
        assert not second.done()
        feed.publish_tick(1)  # a publication restarts the silence: the second is idle 0.2 s after it
        published = loop.time()
        assert await second is False
        assert 0.2 - TIMER_SLACK_S <= loop.time() - published < timeout(0.3)
        assert channel.idle_timer is None and not channel.members
        await _close(pairs)

    run(body())


def test_no_frame_follows_a_websocket_close_frame() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=200") as srv:
            client = await RawWebSocket.connect(srv.host, srv.port, "/ws")
            for _ in range(3):  # in the broadcast
                assert (await asyncio.wait_for(client.read_frame(), timeout(2)))[0] == OP_TEXT
            closing = asyncio.create_task(close_all(srv.app))  # what shutdown does: 1001, then wait for the reply
            (ws,) = srv.app[SOCKETS]
            while not ws.closed:  # until the close frame is out (the server's pusher has not run since)
                await asyncio.sleep(0)
            srv.state.feed.publish_tick(time.time_ns())  # a publication at that moment must not reach it
            while (frame := await asyncio.wait_for(client.read_frame(), timeout(2)))[0] != OP_CLOSE:
                assert frame[0] == OP_TEXT
            assert struct.unpack("!H", frame[1][:2])[0] == 1001
            await asyncio.sleep(0.2)  # 40 publications while the server waits for the close reply
            client.send(client_frame(OP_CLOSE, struct.pack("!H", 1001)))
            after = await asyncio.wait_for(client.reader.read(), timeout(2))  # until the server closes the TCP
            assert after == b"", after[:40]
            await closing
            client.close()

    run(body())
