"""Polls and long polls driven by callbacks (``loadgen.poll.CallbackPolls``) against a scripted HTTP/1.1 server on
127.0.0.1: the unusual answers in the middle of a steady state (an error status, a 410, a close, a malformed body,
a kept-alive connection closed as the request arrives, an idle connection closed) are handed to the coroutine and
counted exactly once; every event is delivered once, and the payload and TCP byte counts stay exact."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from loadgen import longpoll, poll
from loadgen.client import ClientContext, ClientState, Plan, SendWheel
from loadgen.conn import ClientError, Connection, ErrorKind, WindowBook
from loadgen.headers import make_profile
from loadgen.metrics import SeqTracker
from pushbench.config import LoadConfig

EVENTS = 12
NS_PER_S = 1_000_000_000


def event(seq: int) -> bytes:
    return json.dumps({"seq": seq, "ts": time.time_ns(), "data": "x" * seq}, separators=(",", ":")).encode()


@dataclass
class ScriptedServer:
    """Answers ``GET /poll`` and ``GET /longpoll`` as ``docs/contract.md`` says, at most two events per answer
    (so a client needs several polls to catch up), except request number ``n`` (counted from 1 over every
    connection), which gets ``faults[n]``. Long polls with nothing new are held until the next publication."""

    faults: dict[int, str]
    published: list[bytes] = field(default_factory=list)
    requests: int = 0
    connections: int = 0
    sent: dict[int, int] = field(default_factory=dict)  # connection number -> bytes written to it
    new: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def publish(self) -> None:
        self.published.append(event(len(self.published) + 1))
        self.new.set()
        self.new = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        number = self.connections
        self.sent[number] = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                target = head.split(b" ", 2)[1].decode()
                fault = self.faults.get(self.requests, "")
                if fault == "drop":  # a kept-alive connection closed just as the request arrived
                    break
                path, _, query = target.partition("?")
                cursor = int(query.removeprefix("after=")) if query else len(self.published)
                while path == "/longpoll" and cursor >= len(self.published):
                    await self.new.wait()
                answer = self.published[cursor : cursor + 2]
                body = b'{"cursor":%d,"events":[%s]}' % (cursor + len(answer), b",".join(answer))
                status, extra = "200 OK", ""
                if fault == "503":
                    status, body = "503 Service Unavailable", b"busy"
                elif fault == "410":
                    status, body = "410 Gone", b'{"oldest":%d}' % (cursor + 4)
                elif fault == "garbage":
                    body = b'{"cursor":"no"}'
                elif fault == "close":
                    extra = "Connection: close\r\n"
                data = (
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
                ).encode() + body
                writer.write(data)
                self.sent[number] += len(data)
                if fault in ("close", "idle-close"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@dataclass
class Outcome:
    ctx: ClientContext
    client: ClientState
    server: ScriptedServer
    coroutine_fetches: int  # polls whose response the client's coroutine read (not the callbacks)
    sent_at_end: dict[int, int]  # the server's bytes written per connection when the window ended


def run_client(
    monkeypatch: pytest.MonkeyPatch, transport: str, faults: dict[int, str], until: Callable[[ClientState], bool]
) -> Outcome:
    fetches = 0
    real_fetch = poll.fetch

    async def counting_fetch(*args: Any, **kwargs: Any) -> bool:
        nonlocal fetches
        fetches += 1
        return await real_fetch(*args, **kwargs)

    monkeypatch.setattr(poll, "fetch", counting_fetch)

    async def main() -> Outcome:
        server = ScriptedServer(faults)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        now = time.time_ns()
        plan = Plan(
            host="127.0.0.1", port=port, transport=transport, scenario="feed", clients=1, poll_interval_s=0.01,
            send_interval_s=1.0, longpoll_timeout_s=30.0, payload_bytes=100, seed=1, ws_compress=False,
            ramp_up_s=0.0, profile=make_profile(LoadConfig(header_profile="minimal")), anchor_ns=now,
            window_start_ns=now, window_end_ns=now + 10 * NS_PER_S, stop_ns=now + 10 * NS_PER_S,
            seq_first=1, seq_last=EVENTS,
        )  # fmt: skip
        ctx = ClientContext(plan)
        ctx.book.start()  # every connection opens inside the window: counted from its first byte
        client = ClientState(0, random.Random(1), SeqTracker(1, EVENTS))
        main = poll.run_feed if transport == "poll" else longpoll.run_feed
        task = asyncio.create_task(main(ctx, client))
        deadline = time.monotonic() + 5.0
        while not until(client) and time.monotonic() < deadline:
            if server.requests and len(server.published) < EVENTS:  # from the client's first poll on
                server.publish()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # nothing more may arrive: no duplicates, no second error
        ctx.book.end()
        sent_at_end = dict(server.sent)  # the same instant: one loop, and loopback delivers within the write
        ctx.stop.set()
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
        assert task.done()
        for conn in list(ctx.book.open):
            conn.abort()
        listener.close()
        for handler in list(server.handlers):
            handler.cancel()
        if server.handlers:
            await asyncio.wait(server.handlers, timeout=1.0)
        await listener.wait_closed()
        return Outcome(ctx, client, server, fetches, sent_at_end)

    return uvloop.run(main())


def caught_up(client: ClientState) -> bool:
    return client.cursor == EVENTS


def assert_bytes_exact(out: Outcome) -> None:
    """The payload counted is exactly the events' bytes, each once; the kernel's down count of each connection
    is exactly what the server wrote to it."""
    received = [i for i in range(1, EVENTS + 1) if out.client.tracker._seen[i - 1]]
    records = sorted(out.ctx.book.records, key=lambda r: r.conn_seq)
    assert sum(r.bytes_down_payload for r in records) == sum(len(out.server.published[i - 1]) for i in received)
    assert [r.bytes_down_tcp for r in records] == [out.sent_at_end[n] for n in sorted(out.sent_at_end)]


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_a_steady_state_delivers_every_event_once_with_exact_bytes(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {}, caught_up)
    tracker = out.client.tracker
    assert (tracker.received, tracker.duplicated, tracker.lost) == (EVENTS, 0, 0)
    assert sum(out.ctx.errors.values()) == 0 and out.ctx.requests_retried == 0 and out.ctx.reconnects == 0
    assert out.server.connections == 1
    assert out.coroutine_fetches == 1  # the first poll; every later one ran on callbacks
    assert out.server.requests >= EVENTS // 2 + 1
    assert_bytes_exact(out)


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_an_error_status_in_a_steady_state_is_counted_once_then_the_client_resumes(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {3: "503"}, caught_up)
    assert dict(out.ctx.errors) == {"http_status": 1}
    assert out.ctx.reconnects == 1 and out.server.connections == 2  # aborted, backed off, reconnected
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)
    assert any("503 for GET" in s for s in out.ctx.error_samples)
    assert out.coroutine_fetches == 3  # the first poll, the 503 handed over, the first on the new connection
    assert_bytes_exact(out)


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_a_kept_alive_connection_closed_as_the_request_arrives_is_retried_not_counted(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {3: "drop"}, caught_up)
    assert sum(out.ctx.errors.values()) == 0
    assert out.ctx.requests_retried == 1 and out.ctx.reconnects == 0 and out.server.connections == 2
    assert out.coroutine_fetches == 3  # the first poll, the failed one handed over, its retry
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)
    assert_bytes_exact(out)


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_connection_close_in_a_steady_state_goes_on_on_a_new_connection_without_an_error(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {3: "close"}, caught_up)
    assert sum(out.ctx.errors.values()) == 0 and out.ctx.requests_retried == 0
    assert out.server.connections == 2 and out.client.conn_seq == 2
    assert out.coroutine_fetches == 3  # the first poll, the answer with Connection: close, the first on the new one
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)
    assert_bytes_exact(out)


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_a_410_in_a_steady_state_skips_to_the_oldest_event_and_counts_the_loss(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {3: "410"}, caught_up)
    assert out.ctx.stale_resumes == 1 and dict(out.ctx.errors) == {"http_status": 1}
    # Request 3 asked after=N and heard that N + 4 is the oldest: events N+1 to N+3 are never delivered.
    assert (out.client.tracker.received, out.client.tracker.lost) == (EVENTS - 3, 3)
    assert out.server.connections == 1  # a 410 keeps the connection
    assert out.coroutine_fetches == 2  # the first poll and the 410; then callbacks again on the same connection
    assert_bytes_exact(out)


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_a_malformed_body_in_a_steady_state_is_one_protocol_error(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    out = run_client(monkeypatch, transport, {3: "garbage"}, caught_up)
    assert dict(out.ctx.errors) == {"protocol": 1} and out.ctx.reconnects == 1
    assert out.coroutine_fetches == 3
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)
    assert_bytes_exact(out)


def test_a_connection_the_server_closed_while_idle_is_replaced_at_the_next_poll_without_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server answers request 3 and then closes the idle kept-alive connection (as at its keep-alive
    timeout): the next short poll finds it closed and opens a new one, no error, no retry."""
    out = run_client(monkeypatch, "poll", {3: "idle-close"}, caught_up)
    assert sum(out.ctx.errors.values()) == 0 and out.ctx.requests_retried == 0 and out.ctx.reconnects == 0
    assert out.server.connections == 2 and out.coroutine_fetches == 2  # the first poll, the first on the new one
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)


def test_a_long_poll_connection_the_server_closes_right_after_an_answer_is_retried_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server answers long poll 3 (keep-alive) and closes at once. The next long poll goes out as the answer
    is read, without reading the kernel's state first (``Connection.reusable(answered_now=True)``): it fails at
    once, is retried on a new connection and is not counted as an error; every event once, bytes exact."""
    out = run_client(monkeypatch, "longpoll", {3: "idle-close"}, caught_up)
    assert sum(out.ctx.errors.values()) == 0 and out.ctx.reconnects == 0
    assert out.server.connections == 2 and out.ctx.requests_retried == 1
    assert (out.client.tracker.received, out.client.tracker.duplicated) == (EVENTS, 0)
    assert_bytes_exact(out)


def connection_to(port: int, timeout_s: float) -> Awaitable[Connection]:
    return Connection.open(WindowBook(), 0, 1, "127.0.0.1", port, timeout_s)


def test_a_response_that_does_not_come_times_out_once_after_the_connections_timeout() -> None:
    """One timer per connection: armed by the first request, it waits out the rest of a later request's time
    when it fires, so the later request times out ``timeout_s`` after it was sent, not earlier."""

    async def main() -> None:
        second = asyncio.Event()

        async def answer_first_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await reader.readuntil(b"\r\n\r\n")
            await second.wait()  # the second is never answered
            writer.close()

        listener = await asyncio.start_server(answer_first_only, "127.0.0.1", 0)
        conn = await connection_to(listener.sockets[0].getsockname()[1], 0.3)
        assert (await conn.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).body == b"ok"
        await asyncio.sleep(0.2)
        ended: list[float] = []
        sent = time.monotonic()
        conn.send_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda: ended.append(time.monotonic()))
        await asyncio.sleep(0.6)
        assert len(ended) == 1 and ended[0] - sent >= 0.3 - 0.002
        with pytest.raises(ClientError) as caught:
            conn.take_response()
        assert caught.value.kind is ErrorKind.TIMEOUT and "no response within 0.3s" in str(caught.value)
        conn.abort()
        second.set()
        listener.close()
        await listener.wait_closed()

    uvloop.run(main())


def test_the_send_wheel_calls_each_callback_once_never_early_in_due_order_by_millisecond() -> None:
    async def main() -> None:
        wheel = SendWheel(asyncio.get_running_loop())
        calls: list[tuple[int, int]] = []
        start = time.time_ns()
        dues = [start + k * 370_000 for k in range(30)] + [start - 5_000_000]  # 0 to 11 ms ahead, one past
        for i, due in enumerate(dues):
            wheel.add(due, lambda i=i: calls.append((i, time.time_ns())))  # type: ignore[misc]
        await asyncio.sleep(0.05)
        assert sorted(i for i, _ in calls) == list(range(len(dues)))
        assert all(at >= dues[i] for i, at in calls)
        by_ms = [-(-dues[i] // 1_000_000) for i, _ in calls]
        assert by_ms == sorted(by_ms)

    uvloop.run(main())
