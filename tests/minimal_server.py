"""A minimal server that keeps docs/contract.md and nothing more: no /stats, no /time, no limits, no 410.

It stands for "somebody else's server" in the tests of ``[target] url`` and ``python -m servers.check``:
written from the contract alone, it shares no code with ``servers/``.
``python tests/minimal_server.py [--rate HZ]`` binds 127.0.0.1 on a free port and prints ``serving URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web

EVENTS = web.AppKey("events", list)
NEW = web.AppKey("new", asyncio.Condition)


async def publish(app: web.Application, rate_hz: float) -> None:
    period_ns = round(1e9 / rate_hz)
    start = time.time_ns()
    n = 0
    while True:
        due = start + n * period_ns
        await asyncio.sleep(max(0.0, (due - time.time_ns()) / 1e9))
        while time.time_ns() < due:  # never publish before the intended time
            await asyncio.sleep(0.0005)
        events = app[EVENTS]
        events.append(json.dumps({"seq": len(events) + 1, "ts": due, "data": "x" * 50}, separators=(",", ":")))
        async with app[NEW]:
            app[NEW].notify_all()
        n += 1


def after(request: web.Request, default: int) -> int:
    return int(request.query.get("after", default))


def answer(events: list[str], cursor: int) -> web.Response:
    new = events[cursor:]
    body = f'{{"cursor":{cursor + len(new)},"events":[{",".join(new)}]}}'
    return web.Response(text=body, content_type="application/json")


async def poll(request: web.Request) -> web.Response:
    events = request.app[EVENTS]
    if "after" not in request.query:
        return answer(events, len(events))
    return answer(events, after(request, 0))


async def longpoll(request: web.Request) -> web.Response:
    events, new = request.app[EVENTS], request.app[NEW]
    cursor = after(request, len(events))
    async with new:
        await new.wait_for(lambda: len(events) > cursor)
    return answer(events, cursor)


async def follow(request: web.Request, cursor: int) -> AsyncIterator[tuple[int, str]]:
    events, new = request.app[EVENTS], request.app[NEW]
    while True:
        async with new:
            await new.wait_for(lambda c=cursor: len(events) > c)  # type: ignore[misc]
        while cursor < len(events):
            cursor += 1
            yield cursor, events[cursor - 1]


async def sse(request: web.Request) -> web.StreamResponse:
    start = int(request.headers.get("Last-Event-ID", after(request, len(request.app[EVENTS]))))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    async for seq, event in follow(request, start):
        await response.write(f"id: {seq}\ndata: {event}\n\n".encode())
    return response


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)

    async def push() -> None:
        async for _, event in follow(request, after(request, len(request.app[EVENTS]))):
            await sock.send_str(event)

    pusher = None if request.query.get("mode") == "echo" else asyncio.create_task(push())
    async for msg in sock:
        await sock.send_str(msg.data)
    if pusher:
        pusher.cancel()
    return sock


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type=request.content_type)


async def main(rate_hz: float) -> None:
    app = web.Application()
    app[EVENTS] = []
    app[NEW] = asyncio.Condition()
    app.router.add_get("/poll", poll)
    app.router.add_get("/longpoll", longpoll)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"serving http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await publish(app, rate_hz)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=10.0)
    asyncio.run(main(parser.parse_args().rate))
