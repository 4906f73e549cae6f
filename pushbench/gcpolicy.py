"""CPython's cyclic garbage collector, switched off (by default) while a server or a client worker measures.

At 10,000 long-poll clients the collector took 7.0 of the server's 11.7 CPU-seconds and about half of each client
worker's CPU, in stop-the-world passes of ~200 ms over every live connection's objects: pauses that land in the
latencies measured. Reference counting frees almost everything these processes make; after such a run a full
collection finds about 1,900 unreachable objects in the server (README, "Benchmarking pitfalls").
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cyclic_gc(enabled: bool) -> Iterator[None]:
    """The collector on (``enabled``: CPython's default) or off inside (``server.cyclic_gc``, ``load.cyclic_gc``);
    when off, what existed on entry is frozen too (never scanned, should anyone call ``gc.collect()``). Its previous
    state is restored on exit (a Dask worker outlives its shard)."""
    was_enabled = gc.isenabled()
    if enabled:
        gc.enable()
    else:
        gc.freeze()
        gc.disable()
    try:
        yield
    finally:
        if not enabled:
            gc.unfreeze()
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
