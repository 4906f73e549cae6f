"""The feed as pure logic: schedule, lateness, history and cursors, without sockets."""

from __future__ import annotations

import asyncio
import json

import pytest

from servers.feed import Feed, StaleCursor, is_late, period_ns, serialize_event, tick_due_ns


def test_open_model_schedule_is_start_plus_n_periods() -> None:
    assert period_ns(10) == 100_000_000
    assert period_ns(3) == 333_333_333
    assert [tick_due_ns(1_000, n, 250) for n in range(4)] == [1_000, 1_250, 1_500, 1_750]


def test_lateness_threshold_is_strict() -> None:
    assert not is_late(5_000_000, 5_000_000)
    assert is_late(5_000_001, 5_000_000)


def test_event_serialization_is_compact_json() -> None:
    body = serialize_event(7, 123, "ab")
    assert body == b'{"seq":7,"ts":123,"data":"ab"}'
    assert json.loads(body) == {"seq": 7, "ts": 123, "data": "ab"}


def test_burst_seqs_have_no_gaps_and_share_the_intended_time() -> None:
    feed = Feed(rate_hz=10, payload_bytes=5, burst=3, history=100)
    a = feed.publish_tick(1_000)
    b = feed.publish_tick(2_000)
    assert [e.seq for e in a + b] == [1, 2, 3, 4, 5, 6]
    assert {e.ts_ns for e in a} == {1_000} and {e.ts_ns for e in b} == {2_000}
    assert all(len(json.loads(e.body)["data"]) == 5 for e in a + b)


def test_events_after_and_stale_cursor() -> None:
    feed = Feed(rate_hz=10, payload_bytes=1, history=5)
    for n in range(23):  # enough to trigger the chunked trim
        feed.publish_tick(n)
    assert feed.latest_seq == 23 and feed.oldest_seq == 19
    assert [e.seq for e in feed.events_after(18)] == [19, 20, 21, 22, 23]
    assert [e.seq for e in feed.events_after(21)] == [22, 23]
    assert feed.events_after(23) == []
    with pytest.raises(StaleCursor) as info:
        feed.events_after(17)
    assert (info.value.after, info.value.oldest, info.value.latest) == (17, 19, 23)
    assert "18..18 are gone" in str(info.value)


def test_wait_after_wakes_on_publish_and_times_out() -> None:
    async def body() -> tuple[bool, bool, bool]:
        feed = Feed(rate_hz=10, payload_bytes=1)
        waiter = asyncio.create_task(feed.wait_after(0, timeout=5))
        await asyncio.sleep(0.01)
        feed.publish_tick(1)
        woke = await waiter
        timed_out = await feed.wait_after(1, timeout=0.05)
        closing = asyncio.create_task(feed.wait_after(1, timeout=5))
        await asyncio.sleep(0.01)
        feed.close()
        return woke, timed_out, await closing

    assert asyncio.run(body()) == (True, False, False)


def test_no_event_is_published_before_its_intended_time_on_uvloop() -> None:
    """uvloop timers may fire up to ~1 ms early; the publisher must still never run ahead of the schedule."""
    import time

    import uvloop

    async def body() -> list[int]:
        feed = Feed(rate_hz=200, payload_bytes=1)
        task = asyncio.create_task(feed.run())
        early: list[int] = []
        cursor = 0
        while cursor < 100:
            await feed.wait_after(cursor, timeout=5)
            now = time.time_ns()
            for event in feed.events_after(cursor):
                if now < event.ts_ns:
                    early.append(event.ts_ns - now)
                cursor = event.seq
        feed.close()
        task.cancel()
        return early

    assert uvloop.run(body()) == []


def test_held_waiters_time_out_each_at_its_own_deadline_and_a_publication_answers_the_rest() -> None:
    """One loop timer serves every deadline: each waiter still times out at its own, in any order of arrival, and a
    waiter whose request went away (cancelled) is skipped by the publication that answers the others."""

    async def body() -> tuple[list[bool | None], float, float]:
        feed = Feed(rate_hz=10, payload_bytes=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ended: dict[str, float] = {}

        async def wait(name: str, timeout: float | None) -> bool:
            result = await feed.wait_after(0, timeout=timeout)
            ended[name] = loop.time() - started
            return result

        waiters = [
            asyncio.create_task(wait("late", 0.3)),
            asyncio.create_task(wait("early", 0.05)),  # arrives after a later deadline: the timer moves up
            asyncio.create_task(wait("forever", None)),
            asyncio.create_task(wait("gone", 5)),
        ]
        await asyncio.sleep(0.15)
        waiters[3].cancel()
        states = [w.result() if w.done() else None for w in waiters[:3]]  # only "early" is done
        feed.publish_tick(1)
        results = await asyncio.gather(*waiters[:3])
        return [*states, *results], ended["early"], ended["late"]

    states_and_results, early_s, late_s = asyncio.run(body())
    assert states_and_results == [None, False, None, True, False, True]  # late, early, forever; then their results
    assert 0.05 <= early_s < 0.15 and late_s < 0.3, (early_s, late_s)
