"""The one claim -> send -> settle (worker.telemetry.batches) with fake buffer and publisher, as the loop and replay use it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from worker.errors import TransientError
from worker.telemetry.batches import BatchRun, ChosenClaims, DueClaims, Skip
from worker.telemetry.buffer import Attempt, ParkedScope, Settled


def document(n: int, retry_count: int = 1) -> dict[str, Any]:
    return {"_id": f"tel-{n}", "retry_count": retry_count}


class FakeBuffer:
    """A TelemetryBuffer fake: due documents in order, some held by others, an optional failing claim."""

    def __init__(self, due: Sequence[dict[str, Any]], *, held: Sequence[str] = (), fail_after: int | None = None,
                 max_attempts: int = 10) -> None:  # fmt: skip
        self.due = list(due)
        self.held = set(held)
        self.fail_after = fail_after
        self.max_attempts = max_attempts
        self.claims = 0
        self.settled: list[tuple[str, list[Attempt], bool]] = []

    def _count_claim(self) -> None:
        self.claims += 1
        if self.fail_after is not None and self.claims > self.fail_after:
            raise TransientError("MongoDB is down")

    async def claim_next_due(self, owner: str) -> dict[str, Any] | None:
        self._count_claim()
        return self.due.pop(0) if self.due else None

    async def claim_by_id(self, document_id: Any, owner: str, parked: ParkedScope) -> dict[str, Any] | None:
        self._count_claim()
        return None if document_id in self.held else document(int(str(document_id).split("-")[1]))

    def exhausted(self, claimed: dict[str, Any]) -> bool:
        return int(claimed["retry_count"]) > self.max_attempts

    async def settle(self, owner: str, attempts: list[Attempt], *, keep: bool = False) -> Settled:
        self.settled.append((owner, attempts, keep))
        return Settled(removed=sum(1 for a in attempts if a.delivered))


class FakePublisher:
    """Acknowledges every send at once; remembers what it sent."""

    topic = "out"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, claimed: dict[str, Any]) -> Any:
        self.sent.append(claimed["_id"])
        return claimed, Attempt(claimed)

    async def outcomes(self, pending: list[Any], *, within_s: float) -> list[Attempt]:
        return [item for _, item in pending]


def batch_run(buffer: FakeBuffer, publisher: FakePublisher, *, keep: bool = False) -> BatchRun:
    return BatchRun(buffer=buffer, publisher=publisher, lease_s=60, stop=asyncio.Event(), keep=keep)  # type: ignore[arg-type]


async def test_a_batch_claims_up_to_its_size_sends_each_and_settles_them_once() -> None:
    """A batch of 2 from 3 due documents claims and sends 2 and settles them in one call for its owner."""
    buffer, publisher = FakeBuffer([document(1), document(2), document(3)]), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 2)  # type: ignore[arg-type]
    assert publisher.sent == ["tel-1", "tel-2"]
    assert report.claimed == 2 and report.settled == Settled(removed=2) and not report.failed
    assert [(owner, len(attempts), keep) for owner, attempts, keep in buffer.settled] == [("me/1", 2, False)]


async def test_an_exhausted_document_is_settled_as_permanent_without_being_sent() -> None:
    """The loop's claims turn a document claimed more often than allowed into a permanent failure, unsent."""
    buffer, publisher = FakeBuffer([document(1, retry_count=4)], max_attempts=3), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 10)  # type: ignore[arg-type]
    assert publisher.sent == []
    [attempt] = report.attempts
    assert attempt.permanent and attempt.error == "no outcome after 3 attempts (leases lapsed)"


async def test_a_failed_claim_ends_the_batch_but_settles_what_was_sent() -> None:
    """When MongoDB fails mid-batch, the documents already sent are still settled and the error names the claim."""
    buffer, publisher = FakeBuffer([document(n) for n in range(1, 6)], fail_after=2), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 5)  # type: ignore[arg-type]
    assert publisher.sent == ["tel-1", "tel-2"] and report.settled == Settled(removed=2)
    assert report.error == "claim: MongoDB is down" and report.stage == "claim" and report.failed


async def test_chosen_claims_skip_the_held_and_go_on_to_the_next() -> None:
    """Replay's claims skip a document held by another claimant (counted) and fill the batch with the next ones."""
    buffer, publisher = FakeBuffer([], held=["tel-2"]), FakePublisher()
    skipped: list[int] = []
    claims = ChosenClaims(buffer, ["tel-1", "tel-2", "tel-3", "tel-4"], ParkedScope.EXCLUDE,  # type: ignore[arg-type]
                          on_skip=lambda: skipped.append(1))  # fmt: skip
    report = await batch_run(buffer, publisher, keep=True).deliver(claims, "me/1", 2)
    assert publisher.sent == ["tel-1", "tel-3"] and len(skipped) == 1 and report.claimed == 2
    assert claims.remaining == 1 and buffer.settled[0][2] is True
    assert await claims.claim("me/2") == document(4) and await claims.claim("me/2") is None


async def test_a_skip_is_not_the_end_of_the_claims() -> None:
    """`Skip.SKIPPED` differs from None (nothing more): a batch never stops on a skipped document."""
    buffer = FakeBuffer([], held=["tel-1"])
    claims = ChosenClaims(buffer, ["tel-1"], ParkedScope.INCLUDE, on_skip=lambda: None)  # type: ignore[arg-type]
    assert await claims.claim("me/1") is Skip.SKIPPED
    assert await claims.claim("me/1") is None
