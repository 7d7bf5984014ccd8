"""Route priority at MongoDB: a route's write waits while a route before it has writes in hand.

Each route writes its chunks one after the other (worker.pipeline.chunks); with one batch loop
per route (ROUTE_ISOLATION) the routes' writes meet at MongoDB, where a telemetry backlog
would otherwise share the server's time with incidents. A chunk counts as "in hand" from the
moment it is started (its records prepared) until its write is done, retries included; a
write attempt of a route waits while any route before it in ROUTE_PRIORITY has a chunk in
hand. The first route never waits; a write already sent is never interrupted. So under a
backlog on every route the routes drain in ROUTE_PRIORITY's order, and an incident waits at
most for the lower routes' writes already in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from worker.ops import metrics


class WritePriority:
    """Shared by every route's batch processor: `started`/`finished` per chunk, `wait_turn` per attempt.

    A priority is a route's place in ROUTE_PRIORITY: 0 goes first.
    """

    def __init__(self) -> None:
        self._in_hand: Counter[int] = Counter()
        self._waiters: list[asyncio.Future[None]] = []

    def started(self, priority: int) -> None:
        """A chunk of that priority is in hand: lower routes' writes wait until it is finished."""
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
        """True while a route before `priority` has a chunk in hand."""
        return any(other < priority for other in self._in_hand)

    async def wait_turn(self, priority: int, route: str) -> None:
        """Return once no route before `priority` has a chunk in hand."""
        waited_from = time.perf_counter()
        while self.ahead_of(priority):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        metrics.WRITE_WAIT.labels(route).observe(time.perf_counter() - waited_from)
