"""Hostile and mistaken input (issue 5): each gets a clear error and the right status, is counted, and costs
the other clients nothing, not one event."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, RunningServer, run, running_server, timeout
from rawwire import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, RawWebSocket, client_frame, get, http_request

import servers.__main__
from servers.__main__ import main as servers_main

FAST = ("feed.rate_hz=50", "feed.payload_bytes=20")


class Watchers:
    """A WebSocket and an SSE subscriber that record every seq while the test misbehaves next to them."""

    def __init__(self, srv: RunningServer, session: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.session = session
        self.seqs: dict[str, list[int]] = {"ws": [], "sse": []}
        self.tasks: list[asyncio.Task[None]] = []
        self.start = 0

    async def __aenter__(self) -> Watchers:
        await self.srv.state.feed.wait_after(0, timeout(5))
        self.start = self.srv.state.feed.latest_seq
        self.tasks = [asyncio.create_task(self._ws()), asyncio.create_task(self._sse())]
        return self

    async def _ws(self) -> None:
        async with self.session.ws_connect(f"{self.srv.url.replace('http', 'ws')}/ws?after={self.start}") as ws:
            async for msg in ws:
                self.seqs["ws"].append(json.loads(msg.data)["seq"])

    async def _sse(self) -> None:
        async with self.session.get(f"{self.srv.url}/sse?after={self.start}") as resp:
            async for line in resp.content:
                if line.startswith(b"id: "):
                    self.seqs["sse"].append(int(line[4:]))

    async def __aexit__(self, *exc: object) -> None:
        # Let a few more events through after the last bad input, then check nothing was lost.
        target = self.srv.state.feed.latest_seq + 3
        await self.srv.state.feed.wait_after(target, timeout(5))
        await asyncio.sleep(0.1)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if exc[0] is None:
            for name, seqs in self.seqs.items():
                assert seqs[: target - self.start] == list(range(self.start + 1, target + 1)), (name, seqs)


# --- HTTP ---------------------------------------------------------------------------------------------------

HTTP_CASES: list[tuple[str, bytes, int, str]] = [
    ("after=abc", get("/poll?after=abc"), 400, "after must be a non-negative integer"),
    ("negative cursor", get("/longpoll?after=-5"), 400, "after must be a non-negative integer"),
    ("absurd cursor", get("/poll?after=" + "9" * 40), 400, "below 10**18"),
    ("float cursor", get("/ws?after=1.5"), 400, "after must be a non-negative integer"),
    ("cursor from the future", get("/poll?after=999999999"), 400, "beyond the latest event"),
    ("bad Last-Event-ID", get("/sse", extra="Last-Event-ID: yesterday\r\n"), 400, "Last-Event-ID must be"),
    ("unknown path", get("/events"), 404, "Not Found"),
    ("unknown method", b"DELETE /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "Method Not Allowed"),
    ("GET on POST-only /echo", get("/echo"), 405, "Method Not Allowed"),
    (
        "oversized body",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n" + b"x" * 5000,
        413,
        "server.max_body_bytes",
    ),
    ("oversized header", get("/poll", extra="X-Big: " + "a" * 9000 + "\r\n"), 431, "header line is longer"),
    ("too many headers", get("/poll", extra="".join(f"X-{i}: a\r\n" for i in range(200))), 431, "too many header"),
    ("oversized URL", get("/poll?x=" + "a" * 9000), 414, "request line longer"),
    (
        "non-numeric Content-Length",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
        400,
        "Content-Length",
    ),
    ("TLS to the HTTP port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40, 400, "HTTPS traffic"),
    ("binary garbage", b"\x00\xff\x13\x37 / HTTP/1.1\r\n\r\n", 400, ""),
]


def test_bad_http_requests_get_short_json_errors_and_cost_others_nothing() -> None:
    async def body() -> None:
        async with (
            running_server(*FAST, "server.max_body_bytes=1000") as srv,
            aiohttp.ClientSession() as session,
            Watchers(srv, session),
        ):
            for name, raw, status, fragment in HTTP_CASES:
                answer = await http_request(srv.host, srv.port, raw)
                assert answer.status == status, (name, answer)
                assert answer.headers["content-type"].startswith("application/json"), (name, answer)
                assert len(answer.body) < 300, (name, answer.body)
                error = answer.json()
                assert error["status"] == status and fragment in error["error"], (name, error)
                assert b"Traceback" not in answer.body and b'File "' not in answer.body
            rejected = srv.state.stats.rejected
            expected: dict[str, int] = {}
            for _, _, status, _ in HTTP_CASES:
                expected[f"http_{status}"] = expected.get(f"http_{status}", 0) + 1
            assert {k: rejected[k] for k in expected} == expected, dict(rejected)
            assert rejected["bad_cursor"] == 6

    run(body())


def test_stale_cursor_is_410_with_what_was_lost() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=200", "feed.history=5") as srv:
            await srv.state.feed.wait_after(20, timeout(5))
            answer = await http_request(srv.host, srv.port, get("/poll?after=1"))
            assert answer.status == 410
            error = answer.json()
            assert error["after"] == 1 and error["oldest"] > 2 and "are gone" in error["error"]

    run(body())


# --- WebSocket ----------------------------------------------------------------------------------------------


async def close_code_after(srv: RunningServer, path: str, *frames: bytes) -> int | None:
    ws = await RawWebSocket.connect(srv.host, srv.port, path)
    try:
        for frame in frames:
            ws.send(frame)
        return await ws.close_code(timeout(5))
    finally:
        ws.close()


WS_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("oversized message", "/ws?mode=echo", client_frame(OP_TEXT, b"x" * 2000), 1009, "ws_message_too_big"),
    (
        "oversized fragmented message",
        "/ws?mode=echo",
        client_frame(OP_TEXT, b"x" * 900, fin=False) + client_frame(0, b"x" * 900),
        1009,
        "ws_message_too_big",
    ),
    ("invalid UTF-8", "/ws?mode=echo", client_frame(OP_TEXT, b"caf\xc3\x28"), 1007, "ws_invalid_text"),
    ("binary frame on the feed", "/ws", client_frame(OP_BINARY, b"\x00\x01"), 1003, "ws_unsupported_data"),
    ("garbage after the handshake", "/ws", b"\xff\xff\xff\xff garbage", 1002, "ws_protocol_error"),
    ("ping longer than 125 bytes", "/ws?mode=echo", client_frame(OP_PING, b"p" * 126), 1002, "ws_protocol_error"),
    ("reserved opcode", "/ws?mode=echo", client_frame(0x3, b""), 1002, "ws_protocol_error"),
    (
        "close code 1006 on the wire",
        "/ws?mode=echo",
        client_frame(OP_CLOSE, struct.pack("!H", 1006)),
        1002,
        "ws_protocol_error",
    ),
    (
        "close code 999",
        "/ws?mode=echo",
        client_frame(OP_CLOSE, struct.pack("!H", 999)),
        1002,
        "ws_protocol_error",
    ),
]


@pytest.mark.parametrize(("name", "path", "frames", "code", "counter"), WS_CASES, ids=[c[0] for c in WS_CASES])
def test_bad_websocket_input_is_closed_with_the_right_code(
    name: str, path: str, frames: bytes, code: int, counter: str
) -> None:
    async def body() -> None:
        async with (
            running_server(*FAST, "server.max_ws_message_bytes=1024") as srv,
            aiohttp.ClientSession() as session,
            Watchers(srv, session),
        ):
            assert await close_code_after(srv, path, frames) == code, name
            await asyncio.sleep(0.05)
            assert srv.state.stats.rejected[counter] == 1, dict(srv.state.stats.rejected)

    run(body())


def test_valid_close_codes_are_echoed_and_not_counted() -> None:
    async def body() -> None:
        async with running_server(*FAST) as srv:
            for code in (1000, 1001, 1011, 3000, 4999):
                assert await close_code_after(srv, "/ws", client_frame(OP_CLOSE, struct.pack("!H", code))) == code
            assert await close_code_after(srv, "/ws", client_frame(OP_CLOSE, b"")) == 1000
            assert not any(k.startswith("ws_") for k in srv.state.stats.rejected), srv.state.stats.rejected

    run(body())


# --- config and command line -----------------------------------------------------------------------------

# (what a new user might write, extra --set arguments, the fragment the message must contain)
CONFIG_CASES: list[tuple[str, tuple[str, ...], str]] = [
    ("[feed]\nrate_hz = '10'\n", (), "feed.rate_hz: must be a number, got '10' (str)"),
    ("[feed]\nrate_hz = inf\n", (), "feed.rate_hz: must be a finite number, got inf"),
    ("[feed]\nrate_hz = nan\n", (), "feed.rate_hz: must be a finite number, got nan"),
    ("[feed]\nhistory = 0\n", (), "feed.history: must be >= 1, got 0"),
    ("[feed]\npayload_bytes = 1e9\n", (), "feed.payload_bytes: must be an integer"),
    ("[feed]\npayload_bytes = 100_000_000\n", (), "feed.payload_bytes: must be between"),
    ("[server]\nhost = 127.0.0.1\n", (), "invalid TOML"),
    ("[server]\nport = '8080'\n", (), "server.port: must be an integer, got '8080' (str)"),
    ("[server]\nmax_conections = 10\n", (), "server.max_conections: unknown key"),
    ("[server]\nmax_connections = 0\n", (), "server.max_connections: must be >= 1, got 0"),
    ("[server]\nsend_buffer_bytes = 10\n", (), "server.send_buffer_bytes: must be >= 1024, got 10"),
    ("[server]\nmax_ws_message_bytes = -1\n", (), "server.max_ws_message_bytes: must be >= 1"),
    ("[server]\nlongpoll_timeout_s = 0\n", (), "server.longpoll_timeout_s: must be > 0"),
    ("[server]\nws_heartbeat_s = -5\n", (), "server.ws_heartbeat_s: must be >= 0"),
    ("[server]\nkeepalive = 1\n", (), "server.keepalive: must be true or false"),
    ("[server]\nallowed_origins = ['example.com']\n", (), "'example.com' is not an origin"),
    ("[server]\ncors_origins = '*'\n", (), "server.cors_origins: must be a list of strings"),
    ("[server.extra_headers]\nX-Count = 1\n", (), "server.extra_headers: must be a table of strings"),
    ("[server]\nport = 1\nport = 2\n", (), "invalid TOML"),
    ("[Feed]\nrate_hz = 10\n", (), "Feed: unknown section"),
    ("", ("load.transport=websocket",), "load.transport: must be one of poll, longpoll, sse, ws; got 'websocket'"),
    ("", ("server.host=",), "VALUE is not a TOML value"),
    ("", ("server.port=80.5",), "server.port: must be an integer, got 80.5 (float) (from --set)"),
]


@pytest.fixture(autouse=True)
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that should have been refused fails the test at once instead of serving forever in-process."""

    def refuse(main: Any) -> None:
        main.close()
        raise AssertionError("the config was accepted and the server was about to start")

    monkeypatch.setattr(servers.__main__, "run_loop", refuse)


def run_servers_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``python -m servers ARGV`` in this process (argparse's exit included)."""
    try:
        code = servers_main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("text", "overrides", "fragment"), CONFIG_CASES, ids=[c[2][:40] for c in CONFIG_CASES])
def test_bad_config_names_the_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, overrides: tuple[str, ...], fragment: str
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    args = ["--config", str(path)]
    for item in overrides:
        args += ["--set", item]
    code, out, err = run_servers_cli(capsys, *args)
    assert code == 2
    assert out == ""  # nothing started
    assert fragment in err, err
    assert all(line.startswith(f"{path}: ") for line in err.strip().splitlines()), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("make_path", "fragment"),
    [
        (lambda d: d / "absent.toml", "no such file"),
        (lambda d: d, "is a directory"),
        (
            lambda d: (d / "latin1.toml").write_bytes(b"[feed]\nrate_hz = 10 # caf\xe9\n") and d / "latin1.toml",
            "cannot read",
        ),
        (
            lambda d: (d / "bom.toml").write_bytes(b"\xef\xbb\xbf[feed]\nrate_hz = 10\n") and d / "bom.toml",
            "invalid TOML",
        ),
    ],
    ids=["missing file", "a directory", "not UTF-8", "UTF-8 BOM"],
)
def test_unreadable_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_path: Any, fragment: str
) -> None:
    path = make_path(tmp_path)
    code, out, err = run_servers_cli(capsys, "--config", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}: ") and fragment in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--port", "8080"), "unrecognized arguments: --port 8080"),
        (("--config",), "argument --config: expected one argument"),
        (("--set",), "argument --set: expected one argument"),
    ],
)
def test_bad_command_line_exits_2_with_usage(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    code, out, err = run_servers_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert "usage: python -m servers" in err and fragment in err


def test_empty_config_name_is_refused_not_read_as_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_servers_cli(capsys, "--config", "")
    assert (code, out, err) == (2, "", "--config: empty file name\n")


def test_every_problem_in_one_message_from_the_real_command(tmp_path: Path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text("[feed]\nrate_hz = 0\n[server]\nmax_conections = 5\nsend_buffer_bytes = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "servers", "--config", str(path), "--set", "load.transport=carrier-pigeon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout(30),
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    for fragment in (
        "feed.rate_hz",
        "server.max_conections: unknown key",
        "server.send_buffer_bytes",
        "load.transport",
    ):
        assert any(fragment in line for line in lines), (fragment, lines)


def test_port_in_use_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "servers", "--set", f"server.port={port}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout(30),
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_load_generator_refuses_bad_input_and_leaves_no_results_folder(tmp_path: Path) -> None:
    """``python -m loadgen``: a bad config and a bad --set are named together, exit 2, no folder is created."""
    config = tmp_path / "run.toml"
    config.write_text("[feed]\nrate_hz = 0\n[load]\nclients = -1\n")
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "--config", str(config), "--set", "load.transport=ftp", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    for fragment in ("feed.rate_hz", "load.clients", "load.transport: must be one of"):
        assert any(line.startswith(f"{config}: ") and fragment in line for line in lines), (fragment, lines)
    assert "Traceback" not in result.stderr
    assert not out.exists()
