"""The redelivery's fakes (the telemetry buffer, the publisher) and the loop `telemetry redeliver` builds
around them (worker.telemetry.assembly.loop_for).

    buffer = FakeBuffer(due_documents(3))
    loop = loop_from(settings, buffer=buffer, publisher=FakePublisher(down=True), stop=stop)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

from tests.support.kafka import FakeProducer
from tests.support.mongo import FakeGateway
from worker.ops.health import Liveness
from worker.settings import Settings
from worker.telemetry import assembly
from worker.telemetry.buffer import Attempt, Claim, ParkedScope, Settled
from worker.telemetry.loop import RedeliveryLoop

Document = dict[str, Any]


def due_document(n: int, retry_count: int = 1) -> Document:
    """Buffered telemetry number `n` (`_id` tel-<n>) as a claim returns it."""
    return {"_id": f"tel-{n}", "retry_count": retry_count, "correlation": {"workflow_id": "wf-1"}}


def due_documents(count: int, *, first: int = 1) -> list[Document]:
    return [due_document(n) for n in range(first, first + count)]


class FakeBuffer:
    """worker.telemetry.buffer.TelemetryBuffer in memory: claims take the `due` documents in order.

    `endless`: every claim finds as many due documents as it asks for (a backlog never caught up
    with). `per_round` caps what one claim round wins (others won the rest of its read: `more`);
    documents of `held` are claimed by others; claims after the first `fail_after` raise
    `claim_error`. A document claimed more than `max_attempts` times is exhausted. `when_empty`
    is called by a claim that finds nothing due. A batch is settled as `settles_as`, else the
    delivered removed and the rest rescheduled. Counts claim calls (`claims`), documents claimed
    (`claimed`) and purges; records each settle as (owner, attempts, keep).
    """

    def __init__(
        self,
        due: Sequence[Document] = (),
        *,
        endless: bool = False,
        per_round: int | None = None,
        held: Sequence[str] = (),
        claim_error: Exception | None = None,
        fail_after: int = 0,
        max_attempts: int = 10,
        settles_as: Settled | None = None,
        when_empty: Callable[[], object] | None = None,
        lease_s: float = 60.0,
    ) -> None:
        self.due = list(due)
        self.endless = endless
        self.per_round = per_round
        self.held = set(held)
        self.claim_error = claim_error
        self.fail_after = fail_after
        self.max_attempts = max_attempts
        self.settles_as = settles_as
        self.when_empty = when_empty
        self.lease_s = lease_s
        self.dedup_window_s = 0.0
        self.claims = 0
        self.claimed = 0
        self.purges = 0
        self.settled: list[tuple[str, list[Attempt], bool]] = []

    def new_lease_owner(self) -> str:
        return "fake/1"

    def _count_claim(self) -> None:
        self.claims += 1
        if self.claim_error is not None and self.claims > self.fail_after:
            raise self.claim_error

    async def claim_due(self, owner: str, limit: int) -> Claim:
        self._count_claim()
        take = min(limit, self.per_round or limit)
        if self.endless:
            won = due_documents(take, first=self.claimed)
        else:
            won, self.due = self.due[:take], self.due[take:]
        self.claimed += len(won)
        if not won and self.when_empty is not None:
            self.when_empty()
        return Claim(documents=won, more=self.per_round is not None and bool(self.due))

    async def claim_ids(self, ids: Sequence[Any], owner: str, parked: ParkedScope) -> list[Document]:
        self._count_claim()
        won = [due_document(int(str(i).split("-")[1])) for i in ids if i not in self.held]
        self.claimed += len(won)
        return won

    def exhausted(self, claimed: Document) -> bool:
        return int(claimed["retry_count"]) > self.max_attempts

    async def settle(self, owner: str, attempts: list[Attempt], *, keep: bool = False) -> Settled:
        self.settled.append((owner, attempts, keep))
        if self.settles_as is not None:
            return self.settles_as
        delivered = sum(1 for attempt in attempts if attempt.delivered)
        return Settled(removed=delivered, rescheduled=len(attempts) - delivered)

    async def purge_tombstones(self) -> int:
        self.purges += 1
        return 0


class FakePublisher:
    """worker.telemetry.delivery.TelemetryPublisher: every send acknowledged at once or, `down`, failed as
    with the broker away; records the `_id` of each document sent."""

    topic = "out"

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.sent: list[Any] = []

    async def send(self, claimed: Document) -> Any:
        self.sent.append(claimed["_id"])
        if self.down:
            return claimed, Attempt(claimed, error="NodeNotReadyError: down")
        return claimed, Attempt(claimed)

    async def outcomes(self, pending: list[Any], *, within_s: float) -> list[Attempt]:
        return [item for _, item in pending]


def loop_from(
    settings: Settings, *, buffer: Any, publisher: Any, stop: asyncio.Event, liveness: Liveness | None = None
) -> RedeliveryLoop:
    """The loop `telemetry redeliver` builds from `settings` (worker.telemetry.assembly.loop_for) on a
    connected gateway, with `buffer` and `publisher` in place of the ones the factory makes."""
    with (
        mock.patch.object(assembly, "buffer_for", lambda _settings, _database: buffer),
        mock.patch.object(assembly, "TelemetryPublisher", lambda **_: publisher),
    ):
        return assembly.loop_for(settings, FakeGateway(), FakeProducer(), stop, liveness)  # type: ignore[arg-type]


def record_pauses(loop: RedeliveryLoop, stop: asyncio.Event, *, until: int) -> list[float]:
    """The list of the loop's pauses (the seconds of each), taken at once instead of waited out; the
    pause number `until` sets `stop`."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == until:
            stop.set()

    loop._pause = pause  # type: ignore[method-assign]
    return pauses
