"""``python -m servers.check``: the contract checks, judged by pure functions and run against real servers."""

from __future__ import annotations

import subprocess
import sys

from aiohttp import web
from conftest import ROOT, run, running_server, timeout

from pushbench.contract import stats_problems
from servers.check import (
    check_server,
    event_problems,
    main,
    sequence_problems,
    sse_records,
    ts_problem,
    url_problem,
)


def test_event_shape() -> None:
    assert event_problems({"seq": 1, "ts": 1_764_000_000_000_000_000, "data": "x"}) == []
    assert event_problems({"seq": 0, "ts": 1_764_000_000_000_000_000}) == ["seq must be an integer >= 1, got 0"]
    assert event_problems({"seq": True, "ts": 1_764_000_000_000_000_000})[0].startswith("seq must be")
    assert "not in nanoseconds" in event_problems({"seq": 3, "ts": 1_764_000_000})[0]  # seconds, not ns
    assert event_problems({"seq": 3, "ts": "1764000000000000000"})[0].startswith("ts must be an integer")
    assert event_problems([1, 2]) == ["an event must be a JSON object, got [1, 2]"]


def test_sequences_must_follow_the_cursor_without_gap_or_repeat() -> None:
    assert sequence_problems([8, 9, 10], 7) == []
    assert sequence_problems([8, 10], 7) == ["after 7 the seqs must be [8, 9], got [8, 10]"]
    assert sequence_problems([8, 8], 7) == ["after 7 the seqs must be [8, 9], got [8, 8]"]
    assert sequence_problems([9], 7) == ["after 7 the seqs must be [8], got [9]"]


def test_ts_far_from_this_clock_is_noted() -> None:
    now = 1_764_000_000_000_000_000
    assert ts_problem(now - 2_000_000_000, now) is None
    assert ts_problem(now + 400 * 10**9, now) == (
        "ts is +400 s from this machine's clock (the clocks differ, or ts is not ns since the epoch)"
    )


def test_sse_records_parse_ids_data_and_skip_comments_and_partial_records() -> None:
    text = ': keep-alive\n\nid: 4\ndata: {"seq":4}\n\nid: 5\r\ndata: {"seq":5}\r\n\r\nid: 6\ndata: {"se'
    assert sse_records(text) == [("4", '{"seq":4}'), ("5", '{"seq":5}')]


def test_stats_counters_the_load_generator_reads() -> None:
    good = {
        "events_published": 3, "late_ticks": 0, "connections_accepted": 1, "connections_peak": 1,
        "cpu_user_s": 0.1, "cpu_system_s": 0.0, "rss_bytes": 1,
        "deliveries": {"poll": 0, "longpoll": 0, "sse": 0, "ws": 0}, "echoes": {"http": 0, "ws": 0},
    }  # fmt: skip
    assert stats_problems(good) == []
    assert stats_problems({**good, "cpu_user_s": None}) == ["cpu_user_s missing or not a number"]
    assert stats_problems({**good, "cpu_unit_s": 1e-6}) == []  # optional: the step of the CPU counters
    assert stats_problems({**good, "cpu_unit_s": 0}) == ["cpu_unit_s, when present, must be a number of seconds > 0"]
    assert stats_problems({**good, "deliveries": {"ws": 1}}) == [
        "deliveries must map poll, longpoll, sse, ws to counts"
    ]


def test_urls() -> None:
    assert url_problem("http://10.0.0.1:8080") is None
    assert url_problem("ftp://x") is not None
    assert url_problem("http://h:1/poll") is not None
    assert main(["not a url"]) == 2


def test_pushbench_server_conforms_to_every_rule() -> None:
    async def body() -> None:
        async with running_server("feed.rate_hz=20") as srv:
            results = await check_server(srv.url, wait_s=timeout(5))
        assert [r for r in results if not r.ok] == []
        assert len(results) == 11

    run(body())


def test_a_server_without_the_contract_fails_every_required_rule() -> None:
    async def body() -> None:
        runner = web.AppRunner(web.Application())  # answers 404 to every path
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            results = await check_server(f"http://127.0.0.1:{runner.addresses[0][1]}", wait_s=1)
        finally:
            await runner.cleanup()
        assert all(not r.ok for r in results)
        assert "status 404" in results[0].detail

    run(body())


def test_minimal_server_conforms_without_stats_or_time_exit_0() -> None:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "minimal_server.py"), "--rate", "20"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip().removeprefix("serving ")
        done = subprocess.run(
            [sys.executable, "-m", "servers.check", url, "--wait", str(timeout(5))],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout(60),
        )  # fmt: skip
    finally:
        server.kill()
        server.wait()
        if server.stdout:
            server.stdout.close()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 9
    assert any(line.startswith("--") and "/stats" in line and "external, unmeasured" in line for line in lines)
    assert lines[-1].endswith("9 of 9 required rules conform; without /stats, /time")
