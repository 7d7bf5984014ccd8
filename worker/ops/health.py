"""What the probes read: each loop's heartbeat, and why the process is not alive or not ready.

/healthz answers 200 while every loop of the process (the consumer loop, the redelivery
loop) has made progress recently; /readyz answers 200 when MongoDB has answered, every
server is reachable and the consumer holds an assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class Liveness:
    """A loop's heartbeat: `beat(expect_next_within_s)` before any wait or bounded piece of work.

    The loop counts as stuck once `stuck_after_s` have passed beyond the time it said it would
    beat again, so a long planned backoff is never mistaken for a hang.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due = clock()

    def beat(self, expect_next_within_s: float = 0.0) -> None:
        self._due = self._clock() + max(expect_next_within_s, 0.0)

    def overdue_s(self) -> float:
        return self._clock() - self._due


@dataclass
class Health:
    """What the probes read; the app updates it."""

    last_poll: Callable[[], float] | None
    """The consumer loop's last poll (monotonic); None where the process runs no consumer."""
    mongodb_ready: Callable[[], bool]
    has_assignment: Callable[[], bool]
    stuck_after_s: float = 120.0
    loops: Mapping[str, Liveness] = field(default_factory=dict)
    """Other loops of the process by name (e.g. "redelivery")."""
    unreachable: Callable[[], list[dict[str, str]]] = list
    """The servers not answering now, each with `server`, `address`, `since` and `error`."""

    def stuck_loops(self) -> list[str]:
        stuck = [name for name, loop in self.loops.items() if loop.overdue_s() >= self.stuck_after_s]
        if self.last_poll is not None and time.monotonic() - self.last_poll() >= self.stuck_after_s:
            stuck.insert(0, "consumer")
        return stuck

    def alive(self) -> bool:
        return not self.stuck_loops()

    def ready(self) -> bool:
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[dict[str, str]]:
        """Why the process is not ready; empty when it is."""
        reasons = self.unreachable()
        if not self.mongodb_ready() and not any(r.get("server") == "mongodb" for r in reasons):
            reasons.append({"reason": "mongodb_not_reached_yet"})
        if not self.has_assignment():
            reasons.append({"reason": "no_partition_assigned"})
        return reasons
