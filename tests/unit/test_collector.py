"""Specification: once started, the worker leaves its startup objects out of the collector's scans."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.ops.collector import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


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
