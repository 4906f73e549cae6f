"""Slow and dead clients (issue 5): a reader that stalls is dropped at its send-buffer bound while everyone else
gets every event on time; idle and half-open connections are found by heartbeats."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
from conftest import run, running_server, timeout
from rawwire import OP_PING, RawWebSocket

PAYLOAD_BYTES = 64 * 1024
RATE_HZ = 100  # 6.5 MB/s to every subscriber
SEND_BUFFER_BYTES = 256 * 1024
STALLED_SSE = STALLED_WS = 2
FAST_SSE = FAST_WS = 2
RUN_S = 3.0
HISTORY = 50  # events; the feed trims in chunks, so it holds up to twice this (6.5 MB here)


def stalled_socket(port: int, request: bytes) -> socket.socket:
    """A client that sends its request and never reads: tiny receive buffer, so the server's side fills fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def was_dropped(sock: socket.socket, within_s: float) -> bool:
    """True when the server has cut the connection (EOF or reset once the queued bytes are read)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            continue
    return False


async def fast_ws(url: str, after: int, seqs: list[int], lat_ms: list[float], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws?after={after}") as ws:
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.5)
            except TimeoutError:
                continue
            event = json.loads(msg.data)
            seqs.append(event["seq"])
            lat_ms.append((time.time_ns() - event["ts"]) / 1e6)


async def fast_sse(url: str, after: int, seqs: list[int], lat_ms: list[float], stop: asyncio.Event) -> None:
    async with (
        aiohttp.ClientSession(read_bufsize=1 << 20) as session,
        session.get(f"{url}/sse?after={after}") as resp,
    ):
        async for line in resp.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                seqs.append(event["seq"])
                lat_ms.append((time.time_ns() - event["ts"]) / 1e6)
            if stop.is_set():
                return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_stalled_readers_are_dropped_and_the_others_lose_nothing(server_process: Any) -> None:
    server = server_process(
        "--set", f"feed.rate_hz={RATE_HZ}", "--set", f"feed.payload_bytes={PAYLOAD_BYTES}",
        "--set", f"feed.history={HISTORY}", "--set", f"server.send_buffer_bytes={SEND_BUFFER_BYTES}",
    )  # fmt: skip
    url, port = server.url, server.port

    async def body() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:

            async def stats() -> dict[str, Any]:
                async with session.get(f"{url}/stats") as resp:
                    return dict(await resp.json())

            # The history is full-grown (twice over: it is trimmed in chunks) before RSS is read.
            while (before := await stats())["latest_seq"] < 2 * HISTORY + 10:
                await asyncio.sleep(0.1)
            start = before["latest_seq"]
            stop = asyncio.Event()
            seqs: list[list[int]] = [[] for _ in range(FAST_SSE + FAST_WS)]
            lat_ms: list[float] = []
            clients = [asyncio.create_task(fast_sse(url, start, seqs[i], lat_ms, stop)) for i in range(FAST_SSE)] + [
                asyncio.create_task(fast_ws(url, start, seqs[FAST_SSE + i], lat_ms, stop)) for i in range(FAST_WS)
            ]
            host = f"127.0.0.1:{port}"
            stalled = [
                stalled_socket(port, f"GET /sse?after={start} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                for _ in range(STALLED_SSE)
            ] + [
                stalled_socket(
                    port,
                    (
                        f"GET /ws?after={start} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n"
                    ).encode(),
                )
                for _ in range(STALLED_WS)
            ]
            await asyncio.sleep(RUN_S)
            after = await stats()
            stop.set()
            await asyncio.gather(*clients)
            dropped = [await asyncio.to_thread(was_dropped, sock, timeout(5)) for sock in stalled]
            for sock in stalled:
                sock.close()
            return {"before": before, "after": after, "seqs": seqs, "lat_ms": lat_ms, "dropped": dropped}

    result = run(body())
    before, after = result["before"], result["after"]
    stalled_count = STALLED_SSE + STALLED_WS
    # Every stalled reader was cut at its bound and counted; nobody else was.
    assert after["slow_client_drops"] == stalled_count, after
    assert all(result["dropped"]), result["dropped"]
    # Unbounded, the server would hold ~RATE_HZ * PAYLOAD_BYTES * RUN_S = 20 MB per stalled client.
    unbounded_bytes = stalled_count * RATE_HZ * PAYLOAD_BYTES * RUN_S
    rss_growth = after["rss_bytes"] - before["rss_bytes"]
    print(f"\nserver RSS {before['rss_bytes'] / 1e6:.1f} MB -> {after['rss_bytes'] / 1e6:.1f} MB "
          f"(+{rss_growth / 1e6:.1f} MB; unbounded buffering would add ~{unbounded_bytes / 1e6:.0f} MB)")  # fmt: skip
    assert rss_growth < 16_000_000, rss_growth
    # The fast clients got every event, in order, and on time.
    start = before["latest_seq"]
    for seqs in result["seqs"]:
        assert len(seqs) >= RATE_HZ * RUN_S * 0.5, len(seqs)
        assert seqs == list(range(start + 1, start + 1 + len(seqs))), seqs[:5]
    p99 = percentile(result["lat_ms"], 0.99)
    print(f"fast clients: {len(result['lat_ms'])} events, latency p50 {percentile(result['lat_ms'], 0.5):.1f} ms, "
          f"p99 {p99:.1f} ms")  # fmt: skip
    assert p99 < timeout(250), p99


def test_sse_heartbeats_keep_an_idle_stream_alive() -> None:
    async def body() -> None:
        async with (
            running_server("feed.rate_hz=0.01", "server.sse_heartbeat_s=0.1") as srv,
            aiohttp.ClientSession() as session,
            session.get(f"{srv.url}/sse") as resp,
        ):
            started = time.monotonic()
            lines = [await asyncio.wait_for(resp.content.readline(), timeout(2)) for _ in range(6)]
            assert lines == [b": keep-alive\n", b"\n"] * 3
            assert time.monotonic() - started < timeout(1)

    run(body())


def test_websocket_ping_finds_a_dead_peer() -> None:
    async def body() -> None:
        async with (
            running_server("feed.rate_hz=0.01", "server.ws_heartbeat_s=0.2") as srv,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{srv.url}/ws") as live,
        ):
            # aiohttp answers pings while receive() runs: this peer is alive.
            received: asyncio.Queue[Any] = asyncio.Queue()
            reader = asyncio.create_task(_pump(live, received))
            dead = await RawWebSocket.connect(srv.host, srv.port, "/ws")  # never answers a ping
            started = time.monotonic()
            opcode, _ = await asyncio.wait_for(dead.read_frame(), timeout(2))
            assert opcode == OP_PING
            assert await dead.close_code(timeout(2)) is None  # then the server cuts the TCP connection
            assert time.monotonic() - started < timeout(1)
            dead.close()
            assert srv.state.stats.rejected["ws_pong_timeout"] == 1
            # The live peer stays connected through many pings.
            await asyncio.sleep(1.0)
            assert not live.closed
            await live.send_str("still here")
            assert (await asyncio.wait_for(received.get(), timeout(2))).data == "still here"
            assert srv.state.stats.rejected["ws_pong_timeout"] == 1
            reader.cancel()

    run(body())


async def _pump(ws: aiohttp.ClientWebSocketResponse, into: asyncio.Queue[Any]) -> None:
    async for msg in ws:
        await into.put(msg)


def test_a_burst_bigger_than_the_send_buffer_does_not_drop_a_reader_that_keeps_up() -> None:
    """A tick of 50 x 16 KiB events overflows a 64 KiB send buffer at once; a reading client must not pay."""

    async def body() -> None:
        async with running_server(
            "feed.rate_hz=5", "feed.burst=50", "feed.payload_bytes=16384", "feed.history=1000",
            "server.send_buffer_bytes=65536",
        ) as srv:  # fmt: skip
            await srv.state.feed.wait_after(0, timeout(5))
            start = srv.state.feed.latest_seq
            stop = asyncio.Event()
            seqs: list[list[int]] = [[], []]
            lat_ms: list[float] = []
            ws_url = srv.url.replace("http", "ws")
            clients = [
                asyncio.create_task(fast_sse(srv.url, start, seqs[0], lat_ms, stop)),
                asyncio.create_task(fast_ws(ws_url, start, seqs[1], lat_ms, stop)),
            ]
            await srv.state.feed.wait_after(start + 200, timeout(5))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), timeout(5))
            assert srv.state.stats.slow_client_drops == 0
            for got in seqs:
                assert got[:200] == list(range(start + 1, start + 201)), got[:5]

    run(body())
