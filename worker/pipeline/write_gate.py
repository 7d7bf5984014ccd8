"""The write gate shared by the routes: at most N MongoDB writes in flight, highest route first.

Each route writes its chunks one after the other (worker.pipeline.route_writes); with one batch loop
per route (ROUTE_ISOLATION) the routes' writes meet here. A write attempt takes one of
MONGODB_WRITE_CONCURRENCY slots (never across a retry's backoff); when none is free it waits,
and a freed slot goes to the waiting write of the route first in ROUTE_PRIORITY, first come,
first served among equals. So an incident waits only for the writes already in flight and for
the overdue writes waiting before it (below): at most one per other route.

A route writes one chunk at a time, so with two slots or more a lower route would always
find one free, and under a backlog on every route all would drain side by side. So each loop
reports its routes' lag (records past the committed offset), and while a route before this
one has a backlog (at least `backlog` records: more than a batch waits) and is writing (a
write of it in flight or waiting), a lower route's write waits even with a slot free, for at
most `hold_s`; then it is eligible for the next free slot.
Between a route's chunks, and while its loop commits, polls and decodes, it is not writing:
lower routes fill those gaps, so MongoDB stays busy. A gap is only given away after
`GRACE_S`, so that the next chunk of the same batch (ready a few event-loop turns later) keeps
its place. The holds lapse as soon as the higher route stops writing (a backoff, a refused
collection), and never apply at a steady load below capacity, where no lag reaches a batch.

Priority alone starves: with one slot, two higher routes writing back to back always have a
write waiting when it frees, holds or none. So a waiting write that was eligible (not held) for
a slot handed to another write has been passed over; passed over MAX_PASSES times it is
overdue, and overdue writes go first, first come first served, held or not. The bound, whatever
the permits (>= 1), the hold (>= 0 s) and the arrivals: a write is eligible at the latest
`hold_s` after it asks (at once with the holds off), and from then on at most
MAX_PASSES + Q other writes are handed a slot before it, Q being the writes already waiting
when it asked. The routes write one chunk at a time, so Q <= 3: once its hold is over, a write
waits for at most 8 + 3 = 11 others to be handed a slot.
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
    passed: int = 0  # slots handed to other writes while this one was eligible


MAX_PASSES = 8
"""How often a waiting write may be passed over while eligible before it goes next (overdue)."""


GRACE_S = 0.005
"""After a write of a route with a backlog ends, how long its slot stays held for its next chunk."""


class WriteGate:
    """`async with gate.turn(priority, route):` around one write attempt; `permits` at once.

    A priority is the route's place in ROUTE_PRIORITY: 0 goes first. `backlog` (records) and
    `hold_s` (seconds; 0 turns the holds off) are described in the module's docstring.
    No write starves: at the latest `hold_s` after it asks, a write is eligible, and from then on
    at most MAX_PASSES + (the writes already waiting when it asked) are handed a slot before it.
    Times are read from the event loop's clock, the one the hold timers run on.
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
        now = asyncio.get_running_loop().time()
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
        """Hand free slots out: to the first overdue waiter, else to the best eligible one."""
        now = asyncio.get_running_loop().time()
        while self._free and self._waiting:
            eligible = [w for w in self._waiting if self._eligible(w, now)]
            best = self._next(eligible)
            if best is None:
                return
            self._waiting.remove(best)
            if not best.future.done():
                self._free -= 1
                best.future.set_result(None)
                _pass_over(eligible, best)

    def _next(self, eligible: list[_Waiter]) -> _Waiter | None:
        """The first overdue waiter, held or not; else the first come of the highest eligible route."""
        overdue = [w for w in self._waiting if w.passed >= MAX_PASSES]  # in order of arrival
        if overdue:
            return overdue[0]
        return min(eligible, key=lambda w: (w.priority, w.arrival), default=None)


def _pass_over(eligible: list[_Waiter], chosen: _Waiter) -> None:
    """The eligible waiters but `chosen` saw a slot go to another write."""
    for waiter in eligible:
        if waiter is not chosen:
            waiter.passed += 1
