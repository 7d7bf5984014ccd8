"""The write gate shared by the routes: at most N MongoDB writes in flight, highest route first.

Each route writes its chunks one after the other (worker.pipeline.chunks); with one batch loop
per route (ROUTE_ISOLATION) the routes' writes meet here. A write attempt takes one of
MONGODB_WRITE_CONCURRENCY slots (never across a retry's backoff); when none is free it waits,
and a freed slot goes to the waiting write of the route first in ROUTE_PRIORITY, first come,
first served among equals. The gate never holds a slot back while a write waits (no route
is starved while MongoDB has room), so an incident waits at most for the writes already in
flight, and under a backlog on every route the higher routes get the slots and drain first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator

from worker.ops import metrics


class WriteGate:
    """`async with gate.turn(priority, route):` around one write attempt; `permits` at once.

    A priority is the route's place in ROUTE_PRIORITY: 0 goes first.
    """

    def __init__(self, permits: int) -> None:
        if permits < 1:
            raise ValueError("a write gate needs at least one permit")
        self._free = permits
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, arrival, waiter)
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, priority: int, route: str) -> AsyncIterator[None]:
        waited_from = time.perf_counter()
        await self._acquire(priority)
        metrics.WRITE_WAIT.labels(route).observe(time.perf_counter() - waited_from)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free:  # a free slot means nobody waits: a freed one goes straight to a waiter
            self._free -= 1
            return
        entry = (priority, next(self._arrivals), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting, entry)
        try:
            await entry[2]
        except asyncio.CancelledError:
            if entry[2].done() and not entry[2].cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            else:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        """Hand the slot to the best waiter, if any; else it is free."""
        while self._waiting:
            *_, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
