"""Slow and silent attackers (issue 14): request heads that never finish and connections that never ask are closed
after ``server.request_header_timeout_s`` / ``server.idle_timeout_s`` and counted, while subscribers lose nothing."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from conftest import run, running_server, timeout

from servers.timeouts import IDLE_TIMEOUT, REQUEST_TIMEOUT, HeadTimeouts, timeout_response, waiting_deadline

HEADER_S = 1.5
IDLE_S = 1.0
SLOWLORIS = 300  # half-sent request heads, one more header line every TRICKLE_S
SILENT = 5  # connections that never send a byte
KEPT_IDLE = 5  # one complete poll, then silence
KEPT_SLOW = 5  # one complete poll, then a slowloris head on the same connection
TRICKLE_S = 0.3
RATE_HZ = 10


# --- the rule, by hand ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeouts", "waiting_since", "first_request", "first_byte_at", "expected"),
    [
        # a new connection that stays silent: the earlier of opened + 10 (head due) and opened + 75 (idle)
        (HeadTimeouts(10, 75), 100.0, True, None, (110.0, REQUEST_TIMEOUT)),
        (HeadTimeouts(10, 4), 100.0, True, None, (104.0, IDLE_TIMEOUT)),
        # a new connection that started its head at 103: still due at opened + 10, whatever the idle timeout
        (HeadTimeouts(10, 4), 100.0, True, 103.0, (110.0, REQUEST_TIMEOUT)),
        # kept alive after a response at 200: idle until 275; once a byte comes at 260, its head is due at 270
        (HeadTimeouts(10, 75), 200.0, False, None, (275.0, IDLE_TIMEOUT)),
        (HeadTimeouts(10, 75), 200.0, False, 260.0, (270.0, REQUEST_TIMEOUT)),
        (HeadTimeouts(10, 4), 200.0, False, 203.5, (213.5, REQUEST_TIMEOUT)),
    ],
)
def test_waiting_deadline(
    timeouts: HeadTimeouts,
    waiting_since: float,
    first_request: bool,
    first_byte_at: float | None,
    expected: tuple[float, str],
) -> None:
    assert waiting_deadline(timeouts, waiting_since, first_request, first_byte_at) == expected
    # the latest deadline: a kept-alive connection's first byte just before its idle deadline, then a whole head
    assert timeouts.aiohttp_keepalive_s > timeouts.idle_s + timeouts.request_header_s


def test_timeout_response_is_a_complete_408() -> None:
    raw = timeout_response(2.5)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert f"Content-Length: {len(body)}" in lines and "Connection: close" in lines
    assert json.loads(body) == {
        "error": "request head not complete within 2.5 s (server.request_header_timeout_s)",
        "status": 408,
    }


# --- the attack, on a real server -----------------------------------------------------------------------------------


@dataclass
class Closed:
    """How an attacking connection ended, ``after_s`` from a moment no later than the server's clock started for it:
    before connecting, or before sending the request whose response starts the kept-alive wait."""

    after_s: float
    answer: bytes


async def slowloris(host: str, port: int, kept_alive: bool) -> Closed:
    """A request head sent one header line at a time, never finished; with ``kept_alive``, after one real poll."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    if kept_alive:
        writer.write(f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.2)  # idle for a while (less than IDLE_S), then start the slow head
        started = time.monotonic()  # the head is due HEADER_S after the server sees its first byte
    writer.write(f"GET /poll?after=0 HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())

    async def trickle() -> None:
        n = 0
        while not writer.is_closing():
            await asyncio.sleep(TRICKLE_S)
            n += 1
            writer.write(f"X-Slow-{n}: still coming\r\n".encode())

    dripping = asyncio.create_task(trickle())
    try:
        answer = await reader.read()  # until the server closes
    except ConnectionResetError:
        answer = b"(reset)"
    finally:
        dripping.cancel()
        writer.close()
    return Closed(time.monotonic() - started, answer)


async def silent(host: str, port: int, kept_alive: bool) -> Closed:
    """A connection that never sends a byte; with ``kept_alive``, after one real poll."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    if kept_alive:
        started = time.monotonic()  # the idle clock starts when the server has sent the response
        writer.write(f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    try:
        answer = await reader.read()
    finally:
        writer.close()
    return Closed(time.monotonic() - started, answer)


# Subscribers read until ``stop`` is set (events come every 1 / RATE_HZ s, so they notice soon).


async def subscribe_ws(url: str, after: int, seqs: list[int], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{url}/ws?after={after}") as ws:
        while not stop.is_set():
            msg = await ws.receive(timeout(5))
            seqs.append(json.loads(msg.data)["seq"])


async def subscribe_sse(url: str, after: int, seqs: list[int], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/sse?after={after}") as resp:
        while not stop.is_set():
            line = await asyncio.wait_for(resp.content.readline(), timeout(5))
            if line.startswith(b"data: "):
                seqs.append(json.loads(line[6:])["seq"])


async def subscribe_longpoll(url: str, after: int, seqs: list[int], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            async with s.get(f"{url}/longpoll?after={after}") as resp:
                body = await resp.json()
            seqs.extend(e["seq"] for e in body["events"])
            after = body["cursor"]


def test_slowloris_and_silent_connections_are_closed_and_counted_while_subscribers_lose_nothing(
    server_process: Any,
) -> None:
    server = server_process(
        "--set", f"feed.rate_hz={RATE_HZ}", "--set", f"server.request_header_timeout_s={HEADER_S}",
        "--set", f"server.idle_timeout_s={IDLE_S}",
        # no heartbeats: the streams below send nothing at all for longer than both timeouts
        "--set", "server.sse_heartbeat_s=0", "--set", "server.ws_heartbeat_s=0",
    )  # fmt: skip
    url, host, port = server.url, "127.0.0.1", server.port

    async def body() -> dict[str, Any]:
        # One connection for the poller's polls and /stats reads (they overlap), so the count at the end is exact.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as poller:

            async def stats() -> dict[str, Any]:
                async with poller.get(f"{url}/stats") as resp:
                    return dict(await resp.json())

            while (start := (await stats())["latest_seq"]) < 1:
                await asyncio.sleep(0.05)
            stop = asyncio.Event()
            seqs: dict[str, list[int]] = {"ws": [], "sse": [], "longpoll": []}
            subscribers = [
                asyncio.create_task(subscribe_ws(url, start, seqs["ws"], stop)),
                asyncio.create_task(subscribe_sse(url, start, seqs["sse"], stop)),
                asyncio.create_task(subscribe_longpoll(url, start, seqs["longpoll"], stop)),
            ]
            attack_over = asyncio.Event()
            poll_gaps_s: list[float] = []

            async def normal_polls() -> None:
                last_ok = time.monotonic()
                while not attack_over.is_set():
                    async with poller.get(f"{url}/poll?after={start}") as resp:
                        assert resp.status == 200
                        await resp.read()
                    now = time.monotonic()
                    poll_gaps_s.append(now - last_ok)
                    last_ok = now
                    await asyncio.sleep(0.05)

            polling = asyncio.create_task(normal_polls())
            await asyncio.sleep(0.3)  # subscribers connected
            attackers = (
                [slowloris(host, port, kept_alive=False) for _ in range(SLOWLORIS)]
                + [silent(host, port, kept_alive=False) for _ in range(SILENT)]
                + [silent(host, port, kept_alive=True) for _ in range(KEPT_IDLE)]
                + [slowloris(host, port, kept_alive=True) for _ in range(KEPT_SLOW)]
            )
            peak = asyncio.create_task(_peak_open(stats, attack_over))
            closed = await asyncio.wait_for(asyncio.gather(*attackers), timeout(HEADER_S + 5))
            attack_over.set()
            await polling
            peak_open = await peak
            after_attack = await stats()
            end = after_attack["latest_seq"]
            while any(not got or got[-1] < end for got in seqs.values()):
                await asyncio.sleep(0.05)
            open_at_end = (await stats())["connections_open"]  # the subscribers are still connected
            stop.set()
            await asyncio.wait_for(asyncio.gather(*subscribers), timeout(5))
            return {
                "start": start,
                "end": end,
                "seqs": seqs,
                "closed": closed,
                "stats": after_attack,
                "poll_gaps_s": poll_gaps_s,
                "peak_open": peak_open,
                "open_at_end": open_at_end,
            }

    r = run(body())
    closed: list[Closed] = r["closed"]
    slow = closed[:SLOWLORIS] + closed[SLOWLORIS + SILENT + KEPT_IDLE :]
    quiet = closed[SLOWLORIS : SLOWLORIS + SILENT + KEPT_IDLE]
    # Every half-sent head got a 408 (JSON body) once its head was due, and was closed; nothing was answered early.
    assert all(c.answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for c in slow), {c.answer[:40] for c in slow}
    assert all(b'"status": 408' in c.answer for c in slow)
    assert min(c.after_s for c in slow) >= HEADER_S - 0.05, min(c.after_s for c in slow)
    # Connections that never sent a byte (new, or kept alive after a poll) were closed without an answer.
    assert all(c.answer == b"" for c in quiet), [c.answer[:40] for c in quiet]
    assert min(c.after_s for c in quiet) >= IDLE_S - 0.05, min(c.after_s for c in quiet)
    # ... and counted, by kind (the silent ones by the idle rule, which comes first here).
    rejected = r["stats"]["rejected"]
    assert rejected.get(REQUEST_TIMEOUT) == SLOWLORIS + KEPT_SLOW, rejected
    assert rejected.get(IDLE_TIMEOUT) == SILENT + KEPT_IDLE, rejected
    # Every subscriber got every event in order, through the attack and longer than both timeouts without sending.
    start, end = r["start"], r["end"]
    assert end - start >= RATE_HZ * HEADER_S, (start, end)
    for name, seqs in r["seqs"].items():
        assert seqs[: end - start] == list(range(start + 1, end + 1)), (name, seqs[:5], len(seqs))
    # A normal poll kept answering throughout (a generous bound: this shows service, not speed).
    print(
        f"\n{SLOWLORIS + KEPT_SLOW} slow heads -> 408, {SILENT + KEPT_IDLE} silent closed; peak {r['peak_open']} open; "
        f"{len(r['poll_gaps_s'])} polls during the attack, longest gap {max(r['poll_gaps_s']) * 1000:.0f} ms"
    )
    assert r["peak_open"] >= SLOWLORIS, r["peak_open"]
    assert max(r["poll_gaps_s"]) < timeout(1.0), max(r["poll_gaps_s"])
    # Only the three subscribers and the poller's own connection are left.
    assert r["open_at_end"] == 4, r["open_at_end"]


async def _peak_open(stats: Any, over: asyncio.Event) -> int:
    peak = 0
    while not over.is_set():
        peak = max(peak, (await stats())["connections_open"])
        await asyncio.sleep(0.1)
    return peak


def test_a_long_poll_held_longer_than_both_timeouts_is_answered_then_its_idle_connection_closed() -> None:
    async def body() -> None:
        async with running_server(
            "feed.rate_hz=0.05", "server.longpoll_timeout_s=1.2", "server.request_header_timeout_s=0.4",
            "server.idle_timeout_s=0.4",
        ) as srv:  # fmt: skip
            latest = srv.state.feed.latest_seq  # the next event is 20 s away
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            started = time.monotonic()
            writer.write(f"GET /longpoll?after={latest} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
            held_s = time.monotonic() - started
            assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length))["events"] == []
            assert held_s >= 1.2 - 0.05, held_s
            answered = time.monotonic()
            assert await asyncio.wait_for(reader.read(), timeout(5)) == b""  # closed once idle, without an answer
            idle_s = time.monotonic() - answered
            writer.close()
            assert 0.4 - 0.05 <= idle_s < timeout(1.0), idle_s
            assert srv.state.stats.rejected == {IDLE_TIMEOUT: 1}, srv.state.stats.rejected

    run(body())


def test_a_head_still_streaming_in_when_it_times_out_gets_its_408_not_a_reset() -> None:
    """A client that keeps sending header bytes up to the deadline has unread input at the server when it answers
    408; a plain close would make the kernel reset the connection and destroy the answer before it is read. The
    server half-closes instead and drops the rest, so every such client reads the whole 408 and then the end."""

    async def attacker(host: str, port: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        # One header line that keeps growing (about 3 kB by the deadline): under aiohttp's line and count limits.
        writer.write(f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\nX-Flood: ".encode())

        async def flood() -> None:
            while not writer.is_closing():
                writer.write(b"x" * 20)
                await asyncio.sleep(0.002)

        flooding = asyncio.create_task(flood())
        try:
            return await asyncio.wait_for(reader.read(), timeout(5))  # until the server's FIN
        except ConnectionResetError:
            return b"(reset)"
        finally:
            flooding.cancel()
            writer.close()

    async def body() -> None:
        async with running_server("server.request_header_timeout_s=0.3", "server.idle_timeout_s=5") as srv:
            answers = await asyncio.gather(*(attacker(srv.host, srv.port) for _ in range(100)))
            assert srv.state.stats.rejected == {REQUEST_TIMEOUT: 100}, srv.state.stats.rejected
        assert all(a == timeout_response(0.3) for a in answers), {a[:40] for a in answers}

    run(body())


async def poll_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
    writer.write(f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


def test_kept_alive_clocks_follow_each_response_and_a_head_due_before_the_idle_deadline() -> None:
    """The head timer is lazy (set once, re-armed when it fires before the deadline): a connection polling for longer
    than the idle timeout is never closed while it keeps asking, and a head that starts arriving after a response
    is due ``request_header_timeout_s`` after its first byte, before the idle timer already pending for it."""

    async def keeps_polling(host: str, port: int) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(5):  # 2 s of polls 0.4 s apart, past the idle deadline the first timer was set for
            await poll_once(reader, writer, host, port)
            await asyncio.sleep(0.4)
        writer.close()
        return 5

    async def starts_a_head_late(host: str, port: int) -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(host, port)
        await poll_once(reader, writer, host, port)  # the idle clock now runs until 1.5 s from here
        await asyncio.sleep(0.5)
        started = time.monotonic()
        writer.write(f"GET /poll HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())  # never finished
        answer = await asyncio.wait_for(reader.read(), timeout(5))
        writer.close()
        return answer, time.monotonic() - started

    async def body() -> None:
        async with running_server(
            "server.request_header_timeout_s=0.3", "server.idle_timeout_s=1.5", "feed.rate_hz=10"
        ) as srv:
            polls, (answer, after_s) = await asyncio.gather(
                keeps_polling(srv.host, srv.port), starts_a_head_late(srv.host, srv.port)
            )
            assert polls == 5
            assert answer == timeout_response(0.3), answer[:80]
            assert 0.3 - 0.05 <= after_s < 0.7, after_s  # the pending idle timer fires 1.0 s after the first byte
            assert srv.state.stats.rejected == {REQUEST_TIMEOUT: 1}, srv.state.stats.rejected

    run(body())


def test_a_stream_holds_no_head_timer_once_it_owns_its_connection() -> None:
    """A WebSocket or SSE connection drops its pending head timer (``stream_owns_connection``): otherwise each one
    runs an empty timer callback ``request_header_timeout_s`` after it connected (10,000 of them at 10,000 clients)."""

    async def body() -> None:
        async with (
            running_server("feed.rate_hz=10") as srv,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{srv.url}/ws") as ws,
            session.get(f"{srv.url}/sse") as sse,
        ):
            await asyncio.wait_for(ws.receive(), timeout(2))
            await asyncio.wait_for(sse.content.readline(), timeout(2))
            assert srv.runner is not None and srv.runner.server is not None
            handlers = srv.runner.server.connections
            assert len(handlers) == 2
            assert all(h._pb_timer is None for h in handlers)  # type: ignore[attr-defined]

    run(body())


def test_a_kept_alive_connection_holds_no_timer_for_its_first_head_once_that_head_is_in() -> None:
    """The timer set when a connection opens (its first head due ``request_header_timeout_s`` later) is dropped once
    that head is complete: the connection's next timer is for its idle deadline after the response, so polling
    clients do not each run a timer callback ``request_header_timeout_s`` after they connected."""

    async def body() -> None:
        async with running_server("feed.rate_hz=10") as srv:  # defaults: head 10 s, idle 75 s
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            await poll_once(reader, writer, srv.host, srv.port)
            assert srv.runner is not None and srv.runner.server is not None
            (handler,) = srv.runner.server.connections
            now = asyncio.get_running_loop().time()
            writer.close()
            assert handler._pb_timer is not None  # type: ignore[attr-defined]
            assert handler._pb_timer_at > now + 70, handler._pb_timer_at - now  # type: ignore[attr-defined]

    run(body())
