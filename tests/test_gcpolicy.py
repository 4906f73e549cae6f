"""The cyclic collector is off while a server or client worker measures, and restored afterwards."""

from __future__ import annotations

import gc

from pushbench.gcpolicy import cyclic_gc_off


def test_cyclic_gc_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    collections_before = sum(s["collections"] for s in gc.get_stats())
    with cyclic_gc_off():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # the objects that existed on entry are never scanned
        garbage = []
        for _ in range(3 * gc.get_threshold()[0]):  # far beyond the threshold of an automatic collection
            cycle: list[object] = []
            cycle.append(cycle)
            garbage.append(cycle)
        assert sum(s["collections"] for s in gc.get_stats()) == collections_before
        del garbage
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with cyclic_gc_off():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
