"""Record the header bytes real Chromium sends and receives, and write ``configs/browser_profile.json``.

``python -m tools.browser_profile [--out FILE]`` (``make browser-profile``) starts a server, puts a raw TCP
proxy in front of it that keeps every byte in both directions, has headless Chromium (``/usr/bin/chromium``,
no Playwright needed) open the page through the proxy, and takes from the recorded streams: a short-poll
``fetch`` request and its response, the WebSocket handshake request and its 101, and the SSE response. Byte
counts are of the header blocks exactly as they crossed the wire, start line through the blank line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pushbench.config import default_config
from servers.app import make_app

CHROMIUM = os.environ.get("PUSHBENCH_CHROMIUM", "/usr/bin/chromium")
# Root needs --no-sandbox; the rest keep Chromium from calling Google's hosts, which this closed network refuses.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
RECORD_LIMIT_BYTES = 256 * 1024  # per direction per connection: plenty for header blocks
PROFILE_PATH = Path(__file__).resolve().parent.parent / "configs" / "browser_profile.json"
NOTES = (
    "Recorded by `make browser-profile` (tools/browser_profile.py): Chromium loads the pushbench page "
    "through a raw TCP proxy that keeps every byte. request_header_bytes and response_header_bytes are the "
    "exact bytes of the header block as recorded: request line (or status line) through the blank line that "
    "ends the headers, CRLFs included, with the real host:port, here {recorded_host} (recorded on host:port of "
    "{host_len} characters), so a different port or path changes them by its length. {host} stands for host:port and {origin} for http://host:port in header values. No Cookie was "
    "sent (the page's origin has none); the load generator adds one of cookie_bytes. fetch is a short-poll "
    "request, {fetch_line!r}; websocket is the handshake, {ws_line!r}. Response headers are from the pushbench "
    "aiohttp server with its default config (no extra_headers); Date and Content-Length vary in value, not in "
    "name. {mode}"
)


@dataclass
class HeaderBlock:
    """One HTTP start line and its headers, with the raw bytes they were parsed from."""

    start_line: str
    headers: list[tuple[str, str]]
    raw: bytes  # start line through the blank line, CRLFs included

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def parse_header_block(data: bytes, offset: int = 0) -> tuple[HeaderBlock, int] | None:
    """The header block starting at ``offset`` and the offset after it; None if it is not complete yet."""
    end = data.find(b"\r\n\r\n", offset)
    if end < 0:
        return None
    raw = data[offset : end + 4]
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line!r} after {lines[0]!r}")
        headers.append((name, value.strip()))
    return HeaderBlock(lines[0], headers, raw), end + 4


def split_requests(data: bytes) -> list[HeaderBlock]:
    """The requests a client sent on one connection, in order (GETs carry no body); stops at an upgrade."""
    out: list[HeaderBlock] = []
    offset = 0
    while (parsed := parse_header_block(data, offset)) is not None:
        block, offset = parsed
        out.append(block)
        length = int(block.get("Content-Length") or 0)
        offset += length
        if block.get("Upgrade"):
            break
    return out


def split_responses(data: bytes) -> list[HeaderBlock]:
    """The responses a server sent on one connection, skipping Content-Length bodies; stops at a stream."""
    out: list[HeaderBlock] = []
    offset = 0
    while (parsed := parse_header_block(data, offset)) is not None:
        block, offset = parsed
        out.append(block)
        length = block.get("Content-Length")
        if length is None:  # 101 Switching Protocols, a chunked stream (SSE): nothing after it is HTTP
            break
        offset += int(length)
    return out


def request_path(block: HeaderBlock) -> str:
    return block.start_line.split(" ")[1]


def templated(headers: list[tuple[str, str]], host: str) -> list[list[str]]:
    """Header pairs with the origin and host:port replaced by {origin} and {host}; Cookie left out."""
    out = []
    for name, value in headers:
        if name.lower() == "cookie":
            continue
        out.append([name, value.replace(f"http://{host}", "{origin}").replace(host, "{host}")])
    return out


@dataclass
class Exchange:
    """One request and the response to it, on one recorded connection."""

    request: HeaderBlock
    response: HeaderBlock | None


@dataclass
class RecordingProxy:
    """A TCP proxy to ``upstream`` that keeps the first bytes of both directions of every connection."""

    upstream_host: str
    upstream_port: int
    connections: list[tuple[bytearray, bytearray]] = field(default_factory=list)  # (to server, to client)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        to_server, to_client = bytearray(), bytearray()
        self.connections.append((to_server, to_client))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bytearray) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await src.read(65536):
                    if len(record) < RECORD_LIMIT_BYTES:
                        record += chunk
                    dst.write(chunk)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, to_server), pipe(up_reader, writer, to_client))

    def exchanges(self) -> list[Exchange]:
        out = []
        for to_server, to_client in self.connections:
            requests, responses = split_requests(bytes(to_server)), split_responses(bytes(to_client))
            for i, request in enumerate(requests):
                out.append(Exchange(request, responses[i] if i < len(responses) else None))
        return out


def find_exchange(exchanges: list[Exchange], prefix: str, status: str) -> Exchange | None:
    """The first exchange whose path starts with ``prefix`` and whose response has status ``status``."""
    for ex in exchanges:
        response = ex.response
        if request_path(ex.request).startswith(prefix) and response and response.start_line.split(" ")[1] == status:
            return ex
    return None


def chromium_version(executable: str = CHROMIUM) -> str:
    """``Chromium 150.0.7871.100`` from ``chromium --version``."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(Chromium|Google Chrome|Chrome)\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot read a version from {executable} --version: {out!r}")
    return f"{match.group(1)} {match.group(2)}"


HEADED = "Chromium ran headed, on an Xvfb screen, so its User-Agent is the desktop one."
HEADLESS = (
    "Chromium ran headless, so its User-Agent says HeadlessChrome/N where a desktop Chromium says Chrome/N "
    "(8 bytes more per request)."
)


def build_profile(
    exchanges: list[Exchange], host: str, browser: str, recorded_at: str, headed: bool = True
) -> dict[str, Any]:
    """The profile document from recorded exchanges; ValueError naming what is missing."""
    fetch = find_exchange(exchanges, "/poll?after=", "200")
    ws = find_exchange(exchanges, "/ws", "101")
    sse = find_exchange(exchanges, "/sse", "200")
    missing = [name for name, ex in (("/poll?after=N", fetch), ("/ws", ws), ("/sse", sse)) if ex is None]
    if missing:
        raise ValueError(f"Chromium never completed {', '.join(missing)} through the recording proxy")
    assert fetch and ws and sse and fetch.response and ws.response and sse.response
    return {
        "browser": browser,
        "recorded_at": recorded_at,
        "fetch": {
            "request_headers": templated(fetch.request.headers, host),
            "request_header_bytes": len(fetch.request.raw),
        },
        "websocket": {
            "request_headers": templated(ws.request.headers, host),
            "request_header_bytes": len(ws.request.raw),
        },
        "response_headers": {
            "poll": templated(fetch.response.headers, host),
            "sse": templated(sse.response.headers, host),
            "websocket": templated(ws.response.headers, host),
        },
        "response_header_bytes": {
            "poll": len(fetch.response.raw),
            "sse": len(sse.response.raw),
            "websocket": len(ws.response.raw),
        },
        "notes": NOTES.replace("{fetch_line!r}", repr(fetch.request.start_line))
        .replace("{ws_line!r}", repr(ws.request.start_line))
        .replace("{mode}", HEADED if headed else HEADLESS)
        .replace("{recorded_host}", host)
        .replace("{host_len}", str(len(host))),
    }


@contextlib.asynccontextmanager
async def virtual_display() -> AsyncIterator[dict[str, str]]:
    """An Xvfb screen for a headed Chromium; yields the environment with its DISPLAY."""
    xvfb = await asyncio.create_subprocess_exec(
        "Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert xvfb.stdout is not None
    try:
        display = (await asyncio.wait_for(xvfb.stdout.readline(), 10)).decode().strip()
        if not display:
            raise RuntimeError("Xvfb did not start")
        yield {**os.environ, "DISPLAY": f":{display}"}
    finally:
        xvfb.terminate()
        await xvfb.wait()


async def record(executable: str, timeout_s: float, headed: bool) -> tuple[RecordingProxy, str]:
    """Serve, proxy, run Chromium on the page until the needed exchanges are recorded; the proxy and host."""
    app = make_app(default_config(["feed.rate_hz=10"]))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy = RecordingProxy("127.0.0.1", runner.addresses[0][1])
    proxy_server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    host = f"127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    async with contextlib.AsyncExitStack() as stack:
        env = await stack.enter_async_context(virtual_display()) if headed else None
        # Chromium's helper processes may still be writing the profile as it exits: don't fail the recording on it.
        profile_dir = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pushbench-chromium-", ignore_cleanup_errors=True)
        )
        browser = await asyncio.create_subprocess_exec(
            executable, *([] if headed else ["--headless"]), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
            f"http://{host}/",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                try:
                    build_profile(proxy.exchanges(), host, "", "")
                    break
                except ValueError:
                    continue
        finally:
            browser.terminate()
            await browser.wait()
    proxy_server.close()
    await runner.cleanup()
    return proxy, host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.browser_profile", description=__doc__)
    parser.add_argument("--out", type=Path, default=PROFILE_PATH, help="profile file to write")
    parser.add_argument("--chromium", default=CHROMIUM, help="Chromium executable (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the requests")
    parser.add_argument(
        "--headless", action="store_true", help="run Chromium headless (default: headed on Xvfb when it is installed)"
    )
    args = parser.parse_args(argv)
    headed = not args.headless and shutil.which("Xvfb") is not None
    if not headed and not args.headless:
        print("note: no Xvfb (apt-get install -y xvfb): recording headless Chromium", file=sys.stderr)
    if shutil.which(args.chromium) is None:
        print(f"error: no Chromium at {args.chromium}; apt-get install -y chromium", file=sys.stderr)
        return 1
    browser = chromium_version(args.chromium)
    recorded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proxy, host = asyncio.run(record(args.chromium, args.timeout, headed))
    try:
        profile = build_profile(proxy.exchanges(), host, browser, recorded_at, headed)
    except ValueError as exc:
        print(f"error: {exc} within {args.timeout:g} s", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(profile, indent=2) + "\n")
    print(
        f"{args.out}: {browser} ({'headed, Xvfb' if headed else 'headless'}); fetch request headers {profile['fetch']['request_header_bytes']} B, "
        f"WebSocket handshake {profile['websocket']['request_header_bytes']} B; responses "
        + ", ".join(f"{k} {v} B" for k, v in profile["response_header_bytes"].items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
