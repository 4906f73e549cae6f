"""``python -m servers.check URL``: does a server keep pushbench's endpoint contract (docs/contract.md)?

Runs one check per rule of the contract against any server (pushbench's own or another implementation)
and prints what conforms and what does not, so a user knows the server will be measured fairly. Required
rules decide the exit status (0: all conform, 1: some do not; 2: a usage error such as a malformed URL);
optional ones (``/stats``, ``/time``) say what the load generator can measure beyond the client side.

The judging of what came back lives in pure functions (``event_problems``, ``sequence_problems``,
``sse_records``, and ``pushbench.contract.stats_problems``, which the load generator uses too), tested without a
server in ``tests/test_check.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pushbench.contract import stats_problems

EXIT_NONCONFORMING = 1
EXIT_USAGE = 2
TS_PLAUSIBLE_S = 300.0  # an event's ts further from this machine's clock is reported (clocks or units differ)


@dataclass(frozen=True)
class Result:
    rule: str
    required: bool
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.required else "--  ")
        return f"{mark}  {self.rule:<34} {self.detail}"


class Nonconforming(Exception):
    """What the server answered breaks a rule; the message says how."""


# --- judging answers: pure functions --------------------------------------------------------------------------


def event_problems(event: Any) -> list[str]:
    """What is wrong with one event object (``{"seq": int >= 1, "ts": int ns since the epoch, "data": str}``)."""
    if not isinstance(event, dict):
        return [f"an event must be a JSON object, got {event!r:.60}"]
    problems = []
    seq, ts = event.get("seq"), event.get("ts")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        problems.append(f"seq must be an integer >= 1, got {seq!r:.40}")
    if isinstance(ts, bool) or not isinstance(ts, int):
        problems.append(f"ts must be an integer (ns since the Unix epoch), got {ts!r:.40}")
    elif ts < 10**18:
        problems.append(f"ts {ts} is not in nanoseconds since the Unix epoch (too small)")
    if "data" in event and not isinstance(event["data"], str):
        problems.append("data must be a string")
    return problems


def sequence_problems(seqs: Sequence[int], after: int) -> list[str]:
    """Events answered for cursor ``after`` must be ``after + 1, after + 2, ...``: no gap, no repeat, no reorder."""
    expected = list(range(after + 1, after + 1 + len(seqs)))
    if list(seqs) == expected:
        return []
    return [f"after {after} the seqs must be {_span(expected)}, got {_span(list(seqs))}"]


def _span(seqs: list[int]) -> str:
    if len(seqs) > 6:
        return f"{seqs[:3]}...{seqs[-2:]}"
    return str(seqs)


def ts_problem(ts: int, now_ns: int) -> str | None:
    """A ts far from this machine's clock: the clocks differ by that much, or ts is not the intended time."""
    off_s = (ts - now_ns) / 1e9
    if abs(off_s) > TS_PLAUSIBLE_S:
        return f"ts is {off_s:+.0f} s from this machine's clock (the clocks differ, or ts is not ns since the epoch)"
    return None


def sse_records(text: str) -> list[tuple[str | None, str]]:
    """Complete SSE records in ``text`` as (id, data) pairs; comment lines and partial records are skipped."""
    records = []
    for block in text.replace("\r\n", "\n").split("\n\n")[:-1]:
        record_id, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                record_id = value
            elif name == "data":
                data.append(value)
        if data:
            records.append((record_id, "\n".join(data)))
    return records


def parse_event(text: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except ValueError:
        raise Nonconforming(f"not JSON: {text[:60]!r}") from None
    problems = event_problems(event)
    if problems:
        raise Nonconforming("; ".join(problems))
    return dict(event)


# --- talking to the server ---------------------------------------------------------------------------------------


class Checker:
    def __init__(self, base: str, session: aiohttp.ClientSession, wait_s: float) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.wait_s = wait_s

    async def get_json(self, path: str, **kwargs: Any) -> tuple[int, Any, str]:
        async with self.session.get(self.base + path, **kwargs) as response:
            body = await response.read()
            content_type = response.headers.get("Content-Type", "")
            try:
                return response.status, json.loads(body), content_type
            except ValueError:
                return response.status, None, content_type

    async def poll(self, after: int | None) -> tuple[int, list[dict[str, Any]]]:
        path = "/poll" if after is None else f"/poll?after={after}"
        status, body, content_type = await self.get_json(path)
        if status != 200 or not isinstance(body, dict):
            raise Nonconforming(f"GET {path}: status {status}, body not a JSON object")
        if "application/json" not in content_type:
            raise Nonconforming(f"GET {path}: Content-Type {content_type!r}, must be application/json")
        cursor, events = body.get("cursor"), body.get("events")
        if isinstance(cursor, bool) or not isinstance(cursor, int) or not isinstance(events, list):
            raise Nonconforming(f'GET {path}: must be {{"cursor": int, "events": [...]}}, got {str(body)[:80]}')
        for event in events:
            problems = event_problems(event)
            if problems:
                raise Nonconforming(f"GET {path}: " + "; ".join(problems))
        return cursor, events

    async def latest(self) -> int:
        cursor, events = await self.poll(None)
        if events:
            raise Nonconforming("GET /poll without ?after must answer no events")
        return cursor

    async def next_events(self, after: int) -> tuple[int, list[dict[str, Any]]]:
        """Poll until an event after ``after`` exists (the feed publishes on its own schedule)."""
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            cursor, events = await self.poll(after)
            if events:
                return cursor, events
            await asyncio.sleep(0.05)
        raise Nonconforming(f"no event after seq {after} within {self.wait_s:g}s: does the feed publish?")

    # -- the rules --------------------------------------------------------------------------------------------

    async def check_poll(self) -> str:
        latest = await self.latest()
        after = max(0, latest - 1)
        cursor, events = await self.next_events(after)
        seqs = [e["seq"] for e in events]
        problems = sequence_problems(seqs, after)
        if cursor != seqs[-1]:
            problems.append(f"cursor must be the last seq returned ({seqs[-1]}), got {cursor}")
        ts_note = ts_problem(events[-1]["ts"], time.time_ns())
        if problems:
            raise Nonconforming("; ".join(problems))
        return f"cursor {latest} without ?after; after={after}: seq {_span(seqs)}, cursor {cursor}" + (
            f" (note: {ts_note})" if ts_note else ""
        )

    async def check_poll_empty(self) -> str:
        latest = await self.latest()
        cursor, events = await self.poll(latest)
        if events and events[0]["seq"] != latest + 1:
            raise Nonconforming(f"after={latest}: first seq {events[0]['seq']}, must be {latest + 1}")
        if not events and cursor != latest:
            raise Nonconforming(f"after={latest} with no new event: cursor must stay {latest}, got {cursor}")
        return f"after=latest ({latest}): cursor {cursor}, {len(events)} events"

    async def check_longpoll(self) -> str:
        latest = await self.latest()
        path = f"/longpoll?after={latest}"
        started = time.monotonic()
        status, body, _ = await self.get_json(path, timeout=aiohttp.ClientTimeout(total=self.wait_s + 5))
        held_s = time.monotonic() - started
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise Nonconforming(f"GET {path}: status {status}, body {str(body)[:80]}")
        events = body["events"]
        if not events:
            raise Nonconforming(f"GET {path}: answered after {held_s:.2f}s with no event (hold until one exists)")
        for event in events:
            problems = event_problems(event)
            if problems:
                raise Nonconforming(f"GET {path}: " + "; ".join(problems))
        problems = sequence_problems([e["seq"] for e in events], latest)
        if problems:
            raise Nonconforming(f"GET {path}: " + "; ".join(problems))
        return f"held {held_s * 1000:.0f} ms, answered seq {events[0]['seq']}"

    async def sse_events(self, headers: dict[str, str], query: str, count: int) -> list[tuple[str | None, str]]:
        timeout = aiohttp.ClientTimeout(total=self.wait_s + 5)
        async with self.session.get(f"{self.base}/sse{query}", headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise Nonconforming(f"GET /sse{query}: status {response.status}")
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                raise Nonconforming(f"GET /sse{query}: Content-Type {content_type!r}, must be text/event-stream")
            text = ""
            while len(sse_records(text)) < count:
                chunk = await response.content.readany()
                if not chunk:
                    raise Nonconforming(f"GET /sse{query}: stream ended after {len(sse_records(text))} records")
                text += chunk.decode()
            return sse_records(text)[:count]

    async def check_sse(self) -> str:
        latest = await self.latest()
        records = await self.sse_events({}, "", 2)
        return self._judge_stream("GET /sse", records, None, latest)

    async def check_sse_resume(self) -> str:
        latest = await self.latest()
        after = max(0, latest - 2)
        records = await self.sse_events({"Last-Event-ID": str(after)}, "", 2)
        return self._judge_stream("GET /sse, Last-Event-ID", records, after, latest)

    def _judge_stream(self, what: str, records: list[tuple[str | None, str]], after: int | None, latest: int) -> str:
        events = [parse_event(data) for _, data in records]
        seqs = [e["seq"] for e in events]
        for record_id, event in zip((r[0] for r in records), events, strict=True):
            if record_id is not None and record_id != str(event["seq"]):
                raise Nonconforming(f"{what}: id: {record_id} differs from the event's seq {event['seq']}")
            if record_id is None:
                raise Nonconforming(f"{what}: a record without an id: line (Last-Event-ID resume needs it)")
        start = after if after is not None else seqs[0] - 1
        problems = sequence_problems(seqs, start)
        if after is None and seqs[0] <= latest - 1:
            problems.append(f"a new stream must start after the latest event ({latest}), got seq {seqs[0]}")
        if problems:
            raise Nonconforming(f"{what}: " + "; ".join(problems))
        return f"seq {_span(seqs)}"

    async def ws_messages(self, query: str, count: int) -> list[str]:
        timeout = aiohttp.ClientWSTimeout(ws_close=2)
        async with self.session.ws_connect(f"{self.base}/ws{query}", timeout=timeout) as ws:
            messages: list[str] = []
            while len(messages) < count:
                msg = await ws.receive(timeout=self.wait_s)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise Nonconforming(f"GET /ws{query}: expected a text frame, got {msg.type.name}")
                messages.append(msg.data)
            return messages

    async def check_ws(self) -> str:
        latest = await self.latest()
        events = [parse_event(m) for m in await self.ws_messages("", 2)]
        return self._judge_stream("GET /ws", [(str(e["seq"]), json.dumps(e)) for e in events], None, latest)

    async def check_ws_resume(self) -> str:
        latest = await self.latest()
        after = max(0, latest - 2)
        events = [parse_event(m) for m in await self.ws_messages(f"?after={after}", 2)]
        return self._judge_stream(
            f"GET /ws?after={after}", [(str(e["seq"]), json.dumps(e)) for e in events], after, latest
        )

    async def check_ws_echo(self) -> str:
        text = '{"echo":"pushbench-check","n":1}'
        async with self.session.ws_connect(f"{self.base}/ws?mode=echo") as ws:
            await ws.send_str(text)
            msg = await ws.receive(timeout=self.wait_s)
        if msg.type is not aiohttp.WSMsgType.TEXT or msg.data != text:
            raise Nonconforming(f"sent {text!r}, got {msg.type.name} {str(msg.data)[:60]!r}")
        return "text frame echoed unchanged"

    async def check_http_echo(self) -> str:
        body = b'{"echo":"pushbench-check","n":2}'
        async with self.session.post(f"{self.base}/echo", data=body, headers={"Content-Type": "application/json"}) as r:
            got = await r.read()
            status = r.status
        if status != 200 or got != body:
            raise Nonconforming(f"status {status}, body {got[:60]!r}: must be 200 with the request body")
        return f"{len(body)}-byte body echoed unchanged"

    async def check_stats(self) -> str:
        status, body, _ = await self.get_json("/stats")
        if status != 200:
            raise Nonconforming(f"status {status}: server-side columns will be empty (external, unmeasured)")
        problems = stats_problems(body)
        if problems:
            raise Nonconforming("; ".join(problems) + ": server-side columns will be empty (external, unmeasured)")
        return "pushbench's counters: server CPU, memory, deliveries and connections will be measured"

    async def check_time(self) -> str:
        before = time.time_ns()
        status, body, _ = await self.get_json("/time")
        after = time.time_ns()
        value = body.get("server_time_ns") if isinstance(body, dict) else None
        if status != 200 or isinstance(value, bool) or not isinstance(value, int):
            raise Nonconforming(f"status {status}: no server_time_ns; load hosts cannot estimate their clock offset")
        offset_ms = (value - (before + after) // 2) / 1e6
        return f"server_time_ns answered; this machine's offset {offset_ms:+.3f} ms ± {(after - before) / 2e6:.3f} ms"


RULES: list[tuple[str, bool, Callable[[Checker], Awaitable[str]]]] = [
    ("GET /poll, /poll?after=N", True, Checker.check_poll),
    ("GET /poll?after=latest", True, Checker.check_poll_empty),
    ("GET /longpoll?after=latest (held)", True, Checker.check_longpoll),
    ("GET /sse", True, Checker.check_sse),
    ("GET /sse with Last-Event-ID", True, Checker.check_sse_resume),
    ("GET /ws", True, Checker.check_ws),
    ("GET /ws?after=N", True, Checker.check_ws_resume),
    ("GET /ws?mode=echo", True, Checker.check_ws_echo),
    ("POST /echo", True, Checker.check_http_echo),
    ("GET /stats (optional)", False, Checker.check_stats),
    ("GET /time (optional)", False, Checker.check_time),
]


async def check_server(url: str, wait_s: float = 10.0, ca_file: str = "") -> list[Result]:
    """Every rule of the contract against ``url``, one Result each (they run one after another).

    An https server's certificate is checked against ``ca_file`` (PEM), or the system's CAs when it is empty.
    """
    results = []
    context = ssl.create_default_context(cafile=ca_file or None)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=wait_s + 10), connector=aiohttp.TCPConnector(ssl=context)
    ) as session:
        checker = Checker(url, session, wait_s)
        for rule, required, check in RULES:
            try:
                detail = await check(checker)
                results.append(Result(rule, required, True, detail))
            except Nonconforming as exc:
                results.append(Result(rule, required, False, str(exc)))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                results.append(Result(rule, required, False, f"{type(exc).__name__}: {exc}".rstrip(": ")))
    return results


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r}: expected http://HOST:PORT (or https://)"
    if parts.path not in ("", "/") or parts.query:
        return f"{url!r}: give the server's root (http://HOST:PORT), the paths are the contract's"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server's root, e.g. http://127.0.0.1:8080")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the next event (default 10)")
    parser.add_argument("--ca-file", default="", help="https: the CA certificate(s) to trust (default: the system's)")
    args = parser.parse_args(argv)
    problem = url_problem(args.url)
    if not problem and args.ca_file:
        try:
            ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            problem = f"--ca-file {args.ca_file}: not a usable CA certificate: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    results = asyncio.run(check_server(args.url, args.wait, args.ca_file))
    for result in results:
        print(result.line())
    required = [r for r in results if r.required]
    failed = [r for r in required if not r.ok]
    optional = [r.rule.split(" ")[1] for r in results if not r.required and not r.ok]
    verdict = f"{len(required) - len(failed)} of {len(required)} required rules conform"
    if optional:
        verdict += f"; without {', '.join(optional)}"
    print(f"{args.url}: {verdict}" + ("" if not failed else " (see FAIL lines; docs/contract.md)"))
    return EXIT_NONCONFORMING if failed else 0


if __name__ == "__main__":
    sys.exit(main())
