"""Route priority at MongoDB: a route's write waits while a route before it has records in hand.

Each route writes its chunks one after the other (worker.pipeline.chunks); with one batch loop
per route (ROUTE_ISOLATION) the routes' writes meet at MongoDB, where a telemetry backlog
would otherwise share the server's time with incidents. A route's records are "in hand" from
the moment its batch is polled until the batch's writes of that route are done (preparing,
writing, retrying); a write attempt of a route waits while any route before it in
ROUTE_PRIORITY has records in hand. The first route never waits; a write already sent is
never interrupted. So under a backlog on every route the routes drain in ROUTE_PRIORITY's
order, and an incident waits at most for the lower routes' writes already in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from worker.ops import metrics


class WritePriority:
    """Shared by every route's batch processor: `started`/`finished` per batch and route, `wait_turn`
    per write attempt.

    A priority is a route's place in ROUTE_PRIORITY: 0 goes first.
    """

    def __init__(self) -> None:
        self._in_hand: Counter[int] = Counter()
        self._waiters: list[asyncio.Future[None]] = []

    def started(self, priority: int) -> None:
        """Records of that priority are in hand: lower routes' writes wait until they are finished."""
        self._in_hand[priority] += 1

    def finished(self, priority: int) -> None:
        self._in_hand[priority] -= 1
        if self._in_hand[priority] <= 0:
            del self._in_hand[priority]
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def ahead_of(self, priority: int) -> bool:
        """True while a route before `priority` has records in hand."""
        return any(other < priority for other in self._in_hand)

    async def wait_turn(self, priority: int, route: str) -> None:
        """Return once no route before `priority` has records in hand."""
        waited_from = time.perf_counter()
        while self.ahead_of(priority):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        metrics.WRITE_WAIT.labels(route).observe(time.perf_counter() - waited_from)


class Holding:
    """The priorities one batch holds: each released once, when its route's writes are done."""

    def __init__(self, priority: WritePriority, held: set[int]) -> None:
        self._priority = priority
        self._held = set(held)
        for level in self._held:
            priority.started(level)

    def release(self, level: int) -> None:
        if level in self._held:
            self._held.discard(level)
            self._priority.finished(level)

    def release_all(self) -> None:
        for level in list(self._held):
            self.release(level)
