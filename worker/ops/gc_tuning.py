"""The garbage collector after startup: what the process made to start is left out of its scans.

A full collection of CPython's collector scans every tracked object. Once the worker has started
there are about 47,000 of them (modules, clients, settings, pydantic validators), and a full
collection took 40-67 ms on the benchmark machine: a pause of every route at once, a few times a
minute at a steady load. Those objects live as long as the process, so the worker collects once
and freezes the survivors (`gc.freeze`, CPython's documented use for objects made at startup);
the later full collections scan only what the work made since: 2 ms on the same machine.

The youngest generation is collected every `YOUNG_THRESHOLD` allocations instead of CPython's 700.
A batch keeps its records, their dicts, events and documents (about ten tracked objects per
record, 10,000 for a batch of 1,000) alive until it is written, so at 700 the collector scanned
each of them several times while it was still in use, and found nothing: the worker's objects
form no cycles, they are freed by reference counting when the batch ends. Measured on a
40,000-event drain: 404 young collections taking 0.19 s of CPU (7 % of the drain) at 700, 13
taking 0.07 s at 10,000 (docs/benchmarks.md).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def freeze_startup_objects() -> int:
    """Collect, then move every object still tracked out of the collector's scans, and collect the
    youngest generation every YOUNG_THRESHOLD allocations; how many objects moved."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
