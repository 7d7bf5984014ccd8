"""Specification: once started, the worker leaves its startup objects out of the collector's scans."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.ops.gc_tuning import YOUNG_THRESHOLD, freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_startup_are_frozen_and_garbage_is_not() -> None:
    """Every object alive at the freeze is out of the scans; garbage made before it is collected, not frozen."""
    kept = [[index] for index in range(1000)]
    cycle = _Node()
    cycle.next = cycle  # garbage only a collection can free
    gone = weakref.ref(cycle)
    del cycle
    frozen = freeze_startup_objects()
    assert frozen == gc.get_freeze_count() >= len(kept)
    assert gone() is None
    assert not any(obj is kept for obj in gc.get_objects())  # frozen: out of every generation's scans
    made_later = [["after"]]
    assert any(obj is made_later for obj in gc.get_objects())


class _Node:
    next: object = None


@pytest.mark.usefixtures("unfrozen")
def test_a_batch_of_records_alive_until_written_is_not_scanned_by_young_collections() -> None:
    """A batch's 10,000 live containers (records, dicts, documents) cost at most one young
    collection, where CPython's default of 700 would scan them 14 times while in use."""
    freeze_startup_objects()
    collections = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal collections
        if phase == "start" and info["generation"] == 0:
            collections += 1

    gc.collect()
    gc.callbacks.append(count)
    try:
        batch = [{"record": index} for index in range(YOUNG_THRESHOLD - 100)]
    finally:
        gc.callbacks.remove(count)
    assert len(batch) == YOUNG_THRESHOLD - 100
    assert collections <= 1
