"""The cyclic collector is off while a server or client worker measures (unless the config turns it on), and its
previous state comes back afterwards; a real server reports the state it ran with."""

from __future__ import annotations

import gc
from collections.abc import Callable

from pushbench.gcpolicy import cyclic_gc
from tests.conftest import ServerProcess, get_stats


def collections() -> int:
    return sum(s["collections"] for s in gc.get_stats())


def make_garbage() -> None:
    for _ in range(3 * gc.get_threshold()[0]):  # far beyond the threshold of an automatic collection
        cycle: list[object] = []
        cycle.append(cycle)


def test_cyclic_gc_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    before = collections()
    with cyclic_gc(False):
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # the objects that existed on entry are never scanned
        make_garbage()
        assert collections() == before
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_cyclic_gc_on_collects_and_a_disabled_collector_stays_disabled() -> None:
    before = collections()
    with cyclic_gc(True):
        make_garbage()
        assert collections() > before
    gc.disable()
    try:
        with cyclic_gc(True):
            assert gc.isenabled()
        assert not gc.isenabled()
        with cyclic_gc(False):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_real_server_reports_its_collector(server_process: Callable[..., ServerProcess]) -> None:
    assert get_stats(server_process().url)["cyclic_gc"] is False
    assert get_stats(server_process("--set", "server.cyclic_gc=true").url)["cyclic_gc"] is True
