"""The four transports on real sockets: ordering, cursors, resume, echo, /stats, shutdown (issue 2)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web
from conftest import ServerProcess, get_stats, run, running_server, timeout

from loadgen.selfcheck import process_cpu_reader

FAST = ("feed.rate_hz=50", "feed.payload_bytes=20")


async def read_sse(resp: aiohttp.ClientResponse, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Parse ``count`` SSE records into (id, event) pairs."""
    out: list[tuple[int, dict[str, Any]]] = []
    record: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if "data" in record:
                out.append((int(record["id"]), json.loads(record["data"])))
                if len(out) == count:
                    return out
            record = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            record[field] = value
    return out


def assert_in_order(seqs: list[int], first: int, count: int) -> None:
    assert seqs == list(range(first, first + count)), seqs


async def collect_poll(session: aiohttp.ClientSession, url: str, path: str, after: int, count: int) -> list[int]:
    seqs: list[int] = []
    cursor = after
    while len(seqs) < count:
        async with session.get(f"{url}/{path}?after={cursor}") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
        seqs += [e["seq"] for e in body["events"]]
        assert body["cursor"] == (seqs[-1] if body["events"] else cursor)
        cursor = body["cursor"]
        if path == "poll":
            await asyncio.sleep(0.03)
    return seqs[:count]


def test_every_transport_gets_every_event_in_order() -> None:
    async def body() -> None:
        async with running_server(*FAST) as srv, aiohttp.ClientSession() as session:
            await srv.state.feed.wait_after(0, timeout(5))
            start = srv.state.feed.latest_seq

            async def sse() -> list[int]:
                async with session.get(f"{srv.url}/sse?after={start}") as resp:
                    assert resp.headers["Content-Type"] == "text/event-stream"
                    pairs = await read_sse(resp, 20)
                assert all(i == e["seq"] for i, e in pairs)
                return [i for i, _ in pairs]

            async def ws() -> list[int]:
                async with session.ws_connect(f"{srv.url.replace('http', 'ws')}/ws?after={start}") as sock:
                    return [json.loads((await sock.receive()).data)["seq"] for _ in range(20)]

            results = await asyncio.gather(
                collect_poll(session, srv.url, "poll", start, 20),
                collect_poll(session, srv.url, "longpoll", start, 20),
                sse(),
                ws(),
            )
            for seqs in results:
                assert_in_order(seqs, start + 1, 20)
            await asyncio.sleep(0.05)
            stats = srv.state.stats.snapshot(srv.state.feed, srv.state.process)
            assert stats["deliveries"]["sse"] >= 20 and stats["deliveries"]["ws"] >= 20
            assert stats["deliveries"]["poll"] >= 20 and stats["deliveries"]["longpoll"] >= 20

    run(body())


def test_event_shape_and_intended_timestamps() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=20", "feed.payload_bytes=37") as srv:
            await srv.state.feed.wait_after(3, timeout(5))
            async with aiohttp.ClientSession() as session, session.get(f"{srv.url}/poll?after=0") as resp:
                events = (await resp.json())["events"]
            assert [set(e) for e in events] == [{"seq", "ts", "data"}] * len(events)
            assert all(len(e["data"]) == 37 for e in events)
            gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(events)]
            assert gaps and set(gaps) == {50_000_000}  # exactly 1/rate_hz apart: intended, not actual, times
            assert abs(events[-1]["ts"] - time.time_ns()) < 2e9

    run(body())


def test_poll_cursor_rules() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=200", "feed.history=5") as srv, aiohttp.ClientSession() as s:
            async with s.get(f"{srv.url}/poll") as resp:  # no cursor: start now
                first = await resp.json()
            assert first["events"] == [] and first["cursor"] <= srv.state.feed.latest_seq
            await srv.state.feed.wait_after(8, timeout(5))
            srv.state.feed.close()  # freeze the feed to check exact numbers
            await asyncio.sleep(0.01)
            latest = srv.state.feed.latest_seq
            async with s.get(f"{srv.url}/poll?after={latest}") as resp:
                assert await resp.json() == {"cursor": latest, "events": []}
            async with s.get(f"{srv.url}/poll?after={latest - 3}") as resp:
                body = await resp.json()
            assert body["cursor"] == latest and [e["seq"] for e in body["events"]] == [latest - 2, latest - 1, latest]
            async with s.get(f"{srv.url}/poll?after={latest + 5}") as resp:
                assert resp.status == 400
            async with s.get(f"{srv.url}/poll?after=1") as resp:
                assert resp.status == 410  # left the history: the client can tell it lost events
                gone = await resp.json()
            assert gone["oldest"] == latest - 4 and gone["latest"] == latest and "are gone" in gone["error"]
            assert srv.state.stats.stale_cursors == 1

    run(body())


def test_longpoll_holds_until_an_event_then_times_out_empty() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=4", "server.longpoll_timeout_s=0.3") as srv:
            await srv.state.feed.wait_after(0, timeout(5))
            async with aiohttp.ClientSession() as s:
                latest = srv.state.feed.latest_seq
                t0 = time.monotonic()
                async with s.get(f"{srv.url}/longpoll?after={latest}") as resp:
                    body = await resp.json()
                held = time.monotonic() - t0
                assert [e["seq"] for e in body["events"]] == [latest + 1]
                assert 0.02 < held < 0.3  # held for the next tick (every 250 ms), not answered at once
                srv.state.feed.close()  # no more events: the next long poll must time out empty
                cursor = srv.state.feed.latest_seq
                t0 = time.monotonic()
                async with s.get(f"{srv.url}/longpoll?after={cursor}") as resp:
                    assert await resp.json() == {"cursor": cursor, "events": []}
                assert time.monotonic() - t0 < 0.25  # a closed feed answers at once

    run(body())


def test_longpoll_timeout_answers_empty() -> None:
    async def body() -> None:
        async with (
            running_server("feed.rate_hz=0.1", "server.longpoll_timeout_s=0.4") as srv,
            aiohttp.ClientSession() as s,
        ):
            await asyncio.sleep(0.05)
            latest = srv.state.feed.latest_seq
            t0 = time.monotonic()
            async with s.get(f"{srv.url}/longpoll?after={latest}") as resp:
                assert await resp.json() == {"cursor": latest, "events": []}
            assert 0.35 < time.monotonic() - t0 < 2

    run(body())


def test_sse_resumes_after_last_event_id_and_ws_after_query() -> None:
    async def body() -> None:
        async with running_server(*FAST) as srv, aiohttp.ClientSession() as s:
            await srv.state.feed.wait_after(10, timeout(5))
            async with s.get(f"{srv.url}/sse", headers={"Last-Event-ID": "4"}) as resp:
                assert [i for i, _ in await read_sse(resp, 3)] == [5, 6, 7]
            async with s.get(f"{srv.url}/sse?after=2") as resp:
                assert [i for i, _ in await read_sse(resp, 2)] == [3, 4]
            async with s.ws_connect(f"{srv.url}/ws?after=6") as sock:
                assert [json.loads((await sock.receive()).data)["seq"] for _ in range(3)] == [7, 8, 9]
            async with s.get(f"{srv.url}/sse", headers={"Last-Event-ID": "x1"}) as resp:
                assert resp.status == 400

    run(body())


def test_echo_over_http_and_websocket() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=0.01") as srv, aiohttp.ClientSession() as s:
            async with s.post(f"{srv.url}/echo", data=b"ping 123") as resp:
                assert resp.status == 200 and await resp.read() == b"ping 123"
            async with s.ws_connect(f"{srv.url}/ws") as sock:
                for text in ("one", "two", "x" * 70_000):
                    await sock.send_str(text)
                    assert (await sock.receive()).data == text
            stats = srv.state.stats.snapshot(srv.state.feed, srv.state.process)
            assert stats["echoes"] == {"http": 1, "ws": 3}

    run(body())


def test_stats_count_what_the_test_did() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=0.01", "server.keepalive=false") as srv:
            async with aiohttp.ClientSession() as s:
                for _ in range(3):
                    async with s.get(f"{srv.url}/poll") as resp:
                        await resp.read()
                async with s.get(f"{srv.url}/stats") as resp:
                    stats = await resp.json()
            # keepalive=false: one connection per request; the /stats request is the 4th
            assert stats["requests"] == {"poll": 3}
            assert stats["connections_accepted"] == 4
            assert stats["connections_peak"] >= 1
            assert stats["events_published"] == srv.state.feed.latest_seq
            for key in ("late_ticks", "cpu_user_s", "cpu_system_s", "rss_bytes", "uptime_s", "connections_open"):
                assert key in stats
            assert stats["rss_bytes"] > 10_000_000 and stats["cpu_user_s"] > 0

    run(body())


def test_stats_read_the_server_cpu_to_the_microsecond_as_its_cpu_clock_counts_it(
    server_process: Callable[..., ServerProcess],
) -> None:
    # A real server process: the kernel's CPU clock of that process (ns) read before and after each /stats request
    # brackets the user + system time /stats reports (getrusage: each truncated to whole µs, so up to 2 µs under).
    # One /stats request costs well under a 10-ms clock tick: the ticks os.times() counts would read 0 or 10 ms.
    server = server_process("--set", "feed.rate_hz=0.01")
    clock = process_cpu_reader(server.proc.pid)
    readings = []
    for _ in range(5):
        before = clock()
        stats = get_stats(server.url)
        after = clock()
        cpu = stats["cpu_user_s"] + stats["cpu_system_s"]
        assert stats["cpu_unit_s"] == 1e-6
        assert before - 2e-6 <= cpu <= after + 1e-9
        readings.append(cpu)
    steps = [b - a for a, b in itertools.pairwise(readings)]
    assert all(0 < s < 0.01 for s in steps), steps


def test_keepalive_reuses_one_connection() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=0.01") as srv:
            async with aiohttp.ClientSession() as s:
                for _ in range(5):
                    async with s.get(f"{srv.url}/poll") as resp:
                        await resp.read()
            assert srv.state.stats.connections_accepted == 1

    run(body())


def test_extra_headers_on_every_response() -> None:
    async def body() -> None:
        headers = 'server.extra_headers={"X-Served-By" = "edge-7", "Cache-Control" = "private"}'
        async with running_server("feed.rate_hz=0.01", headers) as srv, aiohttp.ClientSession() as s:
            for path in ("/poll", "/stats", "/nope"):
                async with s.get(srv.url + path) as resp:
                    assert resp.headers["X-Served-By"] == "edge-7", path
            async with s.ws_connect(f"{srv.url}/ws") as sock:
                del sock

    run(body())


@pytest.mark.timeout(30)
def test_foreign_clients_websockets_library_and_curl(server_process: Any) -> None:
    srv: ServerProcess = server_process("--config", "configs/quick.toml", "--set", "feed.rate_hz=40")

    async def body() -> list[int]:
        async with websockets.connect(srv.url.replace("http", "ws") + "/ws") as sock:
            return [json.loads(await sock.recv())["seq"] for _ in range(5)]

    seqs = run(body())
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sN", "--max-time", "0.5", f"{srv.url}/sse?after=0"], capture_output=True, text=True
        ).stdout
        assert out.startswith('id: 1\ndata: {"seq":1,')


@pytest.mark.timeout(30)
def test_graceful_shutdown_closes_ws_1001_and_answers_long_polls(server_process: Any) -> None:
    srv: ServerProcess = server_process("--set", "feed.rate_hz=0.01", "--set", "server.longpoll_timeout_s=60")

    async def body() -> tuple[Any, Any, float]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{srv.url}/poll") as resp:
                cursor = (await resp.json())["cursor"]
            sock = await s.ws_connect(f"{srv.url}/ws")
            held = asyncio.create_task(s.get(f"{srv.url}/longpoll?after={cursor}"))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            msg = await sock.receive()
            resp = await held
            body = await resp.json()
            return (msg.type, sock.close_code), body, time.monotonic() - t0

    (msg_type, code), longpoll, elapsed = run(body())
    assert msg_type == aiohttp.WSMsgType.CLOSE and code == 1001
    assert longpoll["events"] == []
    assert elapsed < 5
    assert srv.proc.wait(timeout(10)) == 0  # already signalled: exit status 0 after a clean shutdown


async def raw_exchange(host: str, port: int, request: bytes) -> bytes:
    """One request on its own connection; the whole answer (head and Content-Length body) as it came."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head + await asyncio.wait_for(reader.readexactly(length), timeout(5))
    finally:
        writer.close()


def test_direct_answers_are_the_bytes_aiohttp_writes() -> None:
    """Poll and long-poll answers are written as shared bytes (servers.poll.respond): exactly what aiohttp itself
    writes for ``web.Response(body=<the same body>, content_type="application/json")`` on a kept-alive connection;
    a request asking to close gets aiohttp's own answer, with ``Connection: close``."""

    async def aiohttp_answers(body: bytes) -> tuple[str, int, web.AppRunner]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return "127.0.0.1", runner.addresses[0][1], runner

    async def body() -> None:
        async with running_server("feed.rate_hz=2", "feed.payload_bytes=20") as srv:
            await srv.state.feed.wait_after(1, timeout(5))
            for _ in range(5):  # until no event and no second boundary falls between the two answers
                after = srv.state.feed.latest_seq - 1
                answers = []
                for path in (f"/poll?after={after}", f"/longpoll?after={after}"):
                    request = f"GET {path} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n\r\n".encode()
                    answer = await raw_exchange(srv.host, srv.port, request)
                    ref_host, ref_port, runner = await aiohttp_answers(answer.partition(b"\r\n\r\n")[2])
                    try:
                        reference = await raw_exchange(ref_host, ref_port, request)
                    finally:
                        await runner.cleanup()
                    closing = await raw_exchange(
                        srv.host, srv.port, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                    )
                    answers.append((answer, reference, closing))
                if all(a == r for a, r, _ in answers):
                    break
            for answer, reference, closing in answers:
                assert answer == reference, (answer, reference)
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["cursor"] == after + 1
                assert b"\r\nConnection: close\r\n" in closing
                assert closing.partition(b"\r\n\r\n")[2] == answer.partition(b"\r\n\r\n")[2]
            assert srv.state.stats.deliveries["poll"] >= 2 and srv.state.stats.deliveries["longpoll"] >= 2

    run(body())
