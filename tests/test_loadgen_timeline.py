"""A cell's timeline and plan (loadgen.runner.plan_timeline, make_plan) from hand-made inputs, no processes; the
clients' sleeps on that timeline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import uvloop

from loadgen.client import ClientContext
from loadgen.headers import make_profile
from loadgen.runner import Timeline, make_plan, plan_timeline
from pushbench.config import default_config, expand_cells

S = 1_000_000_000


def test_window_starts_half_a_tick_between_publications_after_ramp_up_and_warm_up() -> None:
    config = default_config(["feed.rate_hz=10", "load.ramp_up_s=0.5", "load.warmup_s=1", "load.duration_s=3"])
    # Event 5 was due at t = 1 s; now is 1.05 s. Clients start 0.3 s later (SETUP_LEAD_S) at 1.35 s, the window
    # not before 1.35 + 0.5 + 1 = 2.85 s: exactly half a tick after the publication due at 2.8 s. 3 s = 30 ticks.
    timeline = plan_timeline(5, 1 * S, config.feed, config.load, 1_050_000_000)
    assert timeline == Timeline(
        anchor_ns=1_350_000_000,
        window_start_ns=2_850_000_000,
        window_end_ns=5_850_000_000,
        stop_ns=6_850_000_000,  # 1 s of drain after the window
        seq_first=24,  # due at 2.9 s (5 + 19 ticks)
        seq_last=53,  # due at 5.8 s: 30 events
    )
    polls = replace(config.load, transport="poll", poll_interval_s=0.5)
    assert plan_timeline(5, 1 * S, config.feed, polls, 1_050_000_000).stop_ns == 5_850_000_000 + 1_500_000_000
    burst = plan_timeline(15, 1 * S, replace(config.feed, burst=3), config.load, 1_050_000_000)
    assert (burst.seq_first, burst.seq_last) == (23 * 3 + 1, 53 * 3)  # 3 events per tick, 90 in the window


def test_the_plan_carries_the_cell_and_its_repeat() -> None:
    cell = expand_cells(default_config(["load.transport=sse", "load.seed=7", "server.ws_compress=true"]))[0]
    timeline = Timeline(1, 2, 3, 4, 5, 6)
    plan = make_plan(cell, 3, make_profile(cell.load), timeline, "127.0.0.1", 4443, "")
    assert (plan.transport, plan.host, plan.port, plan.hostport) == ("sse", "127.0.0.1", 4443, "127.0.0.1:4443")
    assert plan.seed == 7 + 2000  # each repeat gets its own client phases
    assert plan.ws_compress is True and plan.transport_spec.path == "/sse"
    assert (plan.anchor_ns, plan.window_start_ns, plan.window_end_ns, plan.stop_ns) == (1, 2, 3, 4)
    assert (plan.seq_first, plan.seq_last) == (5, 6)


def test_sleep_until_never_returns_early_and_stop_ends_every_sleep() -> None:
    """On uvloop, whose timers are whole milliseconds on a coarse clock: both modes return after the time asked,
    never before it; ``stop.set()`` ends sleeps that have seconds left at once, and they say False."""
    cell = expand_cells(default_config(["load.transport=poll"]))[0]
    plan = make_plan(cell, 0, make_profile(cell.load), Timeline(1, 2, 3, 4, 5, 6), "127.0.0.1", 1, "")

    async def main() -> None:
        ctx = ClientContext(plan)
        for precise in (False, True):
            for k in range(40):
                due = time.time_ns() + k * 97_000  # 0 to 3.8 ms, across millisecond boundaries
                assert await ctx.sleep_until(due, precise=precise)
                assert time.time_ns() >= due
        sleepers = [asyncio.create_task(ctx.sleep_until(time.time_ns() + 30 * S)) for _ in range(3)]
        await asyncio.sleep(0.01)
        ctx.stop.set()
        assert await asyncio.wait_for(asyncio.gather(*sleepers), timeout=1.0) == [False, False, False]
        assert not await ctx.sleep_until(time.time_ns() + S)

    uvloop.run(main())
