"""CPython's cyclic garbage collector, switched off while a server or a client worker measures.

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
def cyclic_gc_off() -> Iterator[None]:
    """No automatic cyclic collection inside; what existed on entry is frozen (never scanned, should anyone call
    ``gc.collect()``). The collector's previous state is restored on exit (a Dask worker outlives its shard)."""
    was_enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
