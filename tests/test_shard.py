"""Shards: which Dask workers can run one, the plan on a shard's own clock, what run.json keeps, core pinning."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.clock import ClockOffset
from loadgen.executors import shard_slots
from loadgen.shard import ShardError, clock_record, pinned_core, shifted
from tests.conftest import ROOT
from tests.test_loadgen_results import fake_run


def test_only_workers_with_a_shard_resource_count() -> None:
    workers = {
        "tcp://10.0.0.2:4000": {"resources": {"shard": 1}},
        "tcp://10.0.0.2:4001": {"resources": {}},
        "tcp://10.0.0.3:4000": {"resources": {"shard": 2.0}},
        "tcp://10.0.0.4:4000": {},
    }
    assert shard_slots(workers) == ["tcp://10.0.0.2:4000", "tcp://10.0.0.3:4000"]


def test_the_plan_moves_onto_the_shards_clock_by_the_offset() -> None:
    plan = fake_run().plan
    assert plan is not None
    # server clock minus shard clock = +250 µs: the shard's clock reads 250 µs less at the same instant
    moved = shifted(plan, 250_000)
    assert moved.anchor_ns == plan.anchor_ns - 250_000
    assert moved.window_start_ns == plan.window_start_ns - 250_000
    assert moved.window_end_ns == plan.window_end_ns - 250_000
    assert moved.stop_ns == plan.stop_ns - 250_000
    assert (moved.seq_first, moved.seq_last) == (plan.seq_first, plan.seq_last)  # seqs are the server's


def test_clock_record_keeps_both_estimates_and_the_correction_uncertainty() -> None:
    before = ClockOffset(offset_ns=4_250, uncertainty_ns=50, rtt_ns=100, exchanges=8, at_ns=1)
    after = ClockOffset(offset_ns=4_400, uncertainty_ns=30, rtt_ns=60, exchanges=8, at_ns=2)
    record = clock_record(before, after, None)
    assert record["applied_offset_ns"] == 4_250
    assert record["uncertainty_ns"] == 180  # 30 + |4400 - 4250|
    assert record["before"]["rtt_ns"] == 100 and record["after"]["offset_ns"] == 4_400
    none = clock_record(None, None, "ValueError: GET /time answered 'HTTP/1.1 404 Not Found'")
    assert none["applied_offset_ns"] == 0 and none["uncertainty_ns"] is None and "404" in none["problem"]


def test_a_shard_pins_its_process_to_a_free_core_and_gives_it_back(tmp_path: Path) -> None:
    allowed = os.sched_getaffinity(0)
    with pinned_core(tmp_path) as core:
        assert core in allowed
        assert os.sched_getaffinity(0) == {core}
        # a second shard on this host (another process) gets another core, or none when every core is taken
        probe = (
            "import os, sys; from pathlib import Path; from loadgen.shard import pinned_core, ShardError\n"
            "os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(',')})  # not the parent's pinned core only\n"
            "try:\n    with pinned_core(Path(sys.argv[1])) as c: print(c)\nexcept ShardError: print('none')"
        )
        other = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path), ",".join(map(str, allowed))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert other in ({str(c) for c in allowed - {core}} or {"none"})
    assert os.sched_getaffinity(0) == allowed


def test_no_free_core_is_an_error_not_a_shared_core(tmp_path: Path) -> None:
    held = []
    try:
        for core in os.sched_getaffinity(0):
            fd = os.open(tmp_path / f"pushbench-core-{core}.lock", os.O_CREAT | os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        before = os.sched_getaffinity(0)
        with pytest.raises(ShardError, match="no free core"), pinned_core(tmp_path):
            pass
        assert os.sched_getaffinity(0) == before
    finally:
        for fd in held:
            os.close(fd)
