"""The one claim -> send -> settle (worker.telemetry.batches) with fake buffer and publisher, as the loop and replay use it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from worker.errors import TransientError
from worker.telemetry.batches import MAX_CLAIM_ROUNDS, BatchRun, ChosenClaims, ClaimRound, DueClaims
from worker.telemetry.buffer import Attempt, Claim, ParkedScope, Settled


def document(n: int, retry_count: int = 1) -> dict[str, Any]:
    return {"_id": f"tel-{n}", "retry_count": retry_count}


class FakeBuffer:
    """A TelemetryBuffer fake: due documents in order, some held by others, an optional failing claim.

    `per_round` caps what one claim round wins (others won the rest of its read: `more` is True)."""

    lease_s = 60.0

    def __init__(self, due: Sequence[dict[str, Any]], *, held: Sequence[str] = (), fail_after: int | None = None,
                 max_attempts: int = 10, per_round: int | None = None) -> None:  # fmt: skip
        self.due = list(due)
        self.held = set(held)
        self.fail_after = fail_after
        self.max_attempts = max_attempts
        self.per_round = per_round
        self.claims = 0
        self.settled: list[tuple[str, list[Attempt], bool]] = []

    def _count_claim(self) -> None:
        self.claims += 1
        if self.fail_after is not None and self.claims > self.fail_after:
            raise TransientError("MongoDB is down")

    async def claim_due(self, owner: str, limit: int) -> Claim:
        self._count_claim()
        take = min(limit, self.per_round or limit)
        won, self.due = self.due[:take], self.due[take:]
        return Claim(documents=won, more=self.per_round is not None and bool(self.due))

    async def claim_ids(self, ids: Sequence[Any], owner: str, parked: ParkedScope) -> list[dict[str, Any]]:
        self._count_claim()
        return [document(int(str(i).split("-")[1])) for i in ids if i not in self.held]

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
    return BatchRun(buffer=buffer, publisher=publisher, stop=asyncio.Event(), keep=keep)  # type: ignore[arg-type]


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


async def test_a_batch_claims_in_one_round_when_nobody_else_claims() -> None:
    """An uncontended batch of 5 from 8 due documents is one claim round (a constant number of round trips)."""
    buffer, publisher = FakeBuffer([document(n) for n in range(1, 9)]), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 5)  # type: ignore[arg-type]
    assert buffer.claims == 1 and report.claimed == 5 and publisher.sent == [f"tel-{n}" for n in range(1, 6)]


async def test_a_contended_batch_claims_again_but_at_most_max_claim_rounds_times() -> None:
    """When others win part of each read, the batch claims again to fill itself, but never more than MAX_CLAIM_ROUNDS rounds."""
    buffer, publisher = FakeBuffer([document(n) for n in range(1, 21)], per_round=2), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 10)  # type: ignore[arg-type]
    assert buffer.claims == MAX_CLAIM_ROUNDS and report.claimed == 2 * MAX_CLAIM_ROUNDS


async def test_a_failed_claim_ends_the_batch_but_settles_what_was_sent() -> None:
    """When MongoDB fails mid-batch, the documents already sent are still settled and the error names the claim."""
    buffer = FakeBuffer([document(n) for n in range(1, 6)], fail_after=1, per_round=2)
    publisher = FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 5)  # type: ignore[arg-type]
    assert publisher.sent == ["tel-1", "tel-2"] and report.settled == Settled(removed=2)
    assert report.error == "claim: MongoDB is down" and report.stage == "claim" and report.failed


async def test_chosen_claims_skip_the_held_and_go_on_to_the_next() -> None:
    """Replay's claims skip a document held by another claimant (counted) and fill the batch with the next ones."""
    buffer, publisher = FakeBuffer([], held=["tel-2"]), FakePublisher()
    skipped: list[int] = []
    claims = ChosenClaims(buffer, ["tel-1", "tel-2", "tel-3", "tel-4"], ParkedScope.EXCLUDE,  # type: ignore[arg-type]
                          on_skip=skipped.append)  # fmt: skip
    report = await batch_run(buffer, publisher, keep=True).deliver(claims, "me/1", 2)
    assert publisher.sent == ["tel-1", "tel-3"] and skipped == [1] and report.claimed == 2
    assert claims.remaining == 1 and buffer.settled[0][2] is True
    assert await claims.claim("me/2", 5) == ClaimRound(claimed=[document(4)], more=False)


async def test_a_round_that_wins_nothing_is_not_the_end_of_the_chosen_claims() -> None:
    """A round whose chosen documents were all held says there is more while chosen ids remain."""
    buffer = FakeBuffer([], held=["tel-1"])
    claims = ChosenClaims(buffer, ["tel-1", "tel-2"], ParkedScope.INCLUDE, on_skip=lambda count: None)  # type: ignore[arg-type]
    assert await claims.claim("me/1", 1) == ClaimRound(claimed=[], more=True)
    assert await claims.claim("me/1", 1) == ClaimRound(claimed=[document(2)], more=False)
