"""The write gate shared by the routes: at most N MongoDB writes in flight, highest route first.

Each route writes its chunks one after the other (worker.pipeline.chunks); with one batch loop
per route (ROUTE_ISOLATION) the routes' writes meet here. A write attempt takes one of
MONGODB_WRITE_CONCURRENCY slots (never across a retry's backoff); when none is free it waits,
and a freed slot goes to the waiting write of the route first in ROUTE_PRIORITY, first come,
first served among equals. So an incident waits at most for the writes already in flight.

A route writes one chunk at a time, so with two slots or more a lower route would always
find one free, and under a backlog on every route all would drain side by side. So each loop
reports its routes' lag (records past the committed offset), and while a route before this
one has a backlog (at least `backlog` records: more than a batch waits) and is writing (a
write of it in flight or waiting), a lower route's write waits even with a slot free, for at
most `hold_s`; then it takes the next free slot, so a lower route is slowed, never starved.
Between a route's chunks, and while its loop commits, polls and decodes, it is not writing:
lower routes fill those gaps, so MongoDB stays busy. A gap is only given away after
`GRACE_S`, so that the next chunk of the same batch (ready a few event-loop turns later) keeps
its place. The holds lapse as soon as the higher route stops writing (a backoff, a refused
collection), and never apply at a steady load below capacity, where no lag reaches a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from worker.ops import metrics


@dataclass
class _Waiter:
    priority: int
    arrival: int
    since: float
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


GRACE_S = 0.005
"""After a write of a route with a backlog ends, how long its slot stays held for its next chunk."""


class WriteGate:
    """`async with gate.turn(priority, route):` around one write attempt; `permits` at once.

    A priority is the route's place in ROUTE_PRIORITY: 0 goes first. `backlog` (records) and
    `hold_s` (seconds; 0 turns the holds off) are described in the module's docstring.
    """

    def __init__(self, permits: int, *, backlog: int = 1000, hold_s: float = 0.0) -> None:
        if permits < 1:
            raise ValueError("a write gate needs at least one permit")
        self._free = permits
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._backlog, self._hold_s = backlog, hold_s
        self._lag: dict[int, int] = {}  # priority -> records past the committed offset
        self._writing: dict[int, int] = {}  # priority -> attempts holding or asking for a slot

    @contextlib.asynccontextmanager
    async def turn(self, priority: int, route: str) -> AsyncIterator[None]:
        waited_from = time.perf_counter()
        self._writing[priority] = self._writing.get(priority, 0) + 1
        try:
            await self._acquire(priority)
            metrics.WRITE_WAIT.labels(route).observe(time.perf_counter() - waited_from)
            try:
                yield
            finally:
                self._release()
        finally:
            self._writing[priority] -= 1
            if self._waiting and self._hold_s:
                asyncio.get_running_loop().call_later(GRACE_S, self._dispatch)

    def report_lag(self, priority: int, records: int) -> None:
        """A route's lag as its loop last saw it (0 while it backs off or holds no partition)."""
        self._lag[priority] = records
        self._dispatch()

    def _held(self, priority: int) -> bool:
        """Whether a route before `priority` has a backlog and is writing."""
        return any(
            lag >= self._backlog and self._writing.get(higher, 0) > 0
            for higher, lag in self._lag.items()
            if higher < priority
        )

    def _eligible(self, waiter: _Waiter, now: float) -> bool:
        return not self._hold_s or now - waiter.since >= self._hold_s or not self._held(waiter.priority)

    async def _acquire(self, priority: int) -> None:
        now = time.monotonic()
        if self._free and not self._waiting and not (self._hold_s and self._held(priority)):
            self._free -= 1
            return
        waiter = _Waiter(priority, next(self._arrivals), now)
        self._waiting.append(waiter)
        # The timer fires a little after the hold ends, so that the waiter is eligible then.
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(self._hold_s + GRACE_S, self._dispatch) if self._hold_s else None
        self._dispatch()  # a free slot may be this waiter's at once
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _release(self) -> None:
        self._free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the best eligible waiters: the first route, then the first come."""
        now = time.monotonic()
        while self._free and self._waiting:
            eligible = [w for w in self._waiting if self._eligible(w, now)]
            if not eligible:
                return
            best = min(eligible, key=lambda w: (w.priority, w.arrival))
            self._waiting.remove(best)
            if not best.future.done():
                self._free -= 1
                best.future.set_result(None)
