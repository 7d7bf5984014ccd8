"""The one claim -> send -> settle (worker.telemetry.batches) with fake buffer and publisher, as the loop and replay use it."""

from __future__ import annotations

import asyncio

from tests.support.telemetry import FakeBuffer, FakePublisher, due_document
from worker.errors import TransientError
from worker.telemetry.batches import MAX_CLAIM_ROUNDS, BatchRun, ChosenClaims, ClaimRound, DueClaims
from worker.telemetry.buffer import ParkedScope, Settled


def batch_run(buffer: FakeBuffer, publisher: FakePublisher, *, keep: bool = False) -> BatchRun:
    return BatchRun(buffer=buffer, publisher=publisher, stop=asyncio.Event(), keep=keep)  # type: ignore[arg-type]


async def test_a_batch_claims_up_to_its_size_sends_each_and_settles_them_once() -> None:
    """A batch of 2 from 3 due documents claims and sends 2 and settles them in one call for its owner."""
    buffer, publisher = FakeBuffer([due_document(1), due_document(2), due_document(3)]), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 2)  # type: ignore[arg-type]
    assert publisher.sent == ["tel-1", "tel-2"]
    assert report.claimed == 2 and report.settled == Settled(removed=2) and not report.failed
    assert [(owner, len(attempts), keep) for owner, attempts, keep in buffer.settled] == [("me/1", 2, False)]


async def test_an_exhausted_document_is_settled_as_permanent_without_being_sent() -> None:
    """The loop's claims turn a document claimed more often than allowed into a permanent failure, unsent."""
    buffer, publisher = FakeBuffer([due_document(1, retry_count=4)], max_attempts=3), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 10)  # type: ignore[arg-type]
    assert publisher.sent == []
    [attempt] = report.attempts
    assert attempt.permanent and attempt.error == "no outcome after 3 attempts (leases lapsed)"


async def test_a_batch_claims_in_one_round_when_nobody_else_claims() -> None:
    """An uncontended batch of 5 from 8 due documents is one claim round (a constant number of round trips)."""
    buffer, publisher = FakeBuffer([due_document(n) for n in range(1, 9)]), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 5)  # type: ignore[arg-type]
    assert buffer.claims == 1 and report.claimed == 5 and publisher.sent == [f"tel-{n}" for n in range(1, 6)]


async def test_a_contended_batch_claims_again_but_at_most_max_claim_rounds_times() -> None:
    """When others win part of each read, the batch claims again to fill itself, but never more than MAX_CLAIM_ROUNDS rounds."""
    buffer, publisher = FakeBuffer([due_document(n) for n in range(1, 21)], per_round=2), FakePublisher()
    report = await batch_run(buffer, publisher).deliver(DueClaims(buffer), "me/1", 10)  # type: ignore[arg-type]
    assert buffer.claims == MAX_CLAIM_ROUNDS and report.claimed == 2 * MAX_CLAIM_ROUNDS


async def test_a_failed_claim_ends_the_batch_but_settles_what_was_sent() -> None:
    """When MongoDB fails mid-batch, the documents already sent are still settled and the error names the claim."""
    buffer = FakeBuffer([due_document(n) for n in range(1, 6)], claim_error=TransientError("MongoDB is down"), fail_after=1, per_round=2)
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
    assert await claims.claim("me/2", 5) == ClaimRound(claimed=[due_document(4)], more=False)


async def test_a_round_that_wins_nothing_is_not_the_end_of_the_chosen_claims() -> None:
    """A round whose chosen documents were all held says there is more while chosen ids remain."""
    buffer = FakeBuffer([], held=["tel-1"])
    claims = ChosenClaims(buffer, ["tel-1", "tel-2"], ParkedScope.INCLUDE, on_skip=lambda count: None)  # type: ignore[arg-type]
    assert await claims.claim("me/1", 1) == ClaimRound(claimed=[], more=True)
    assert await claims.claim("me/1", 1) == ClaimRound(claimed=[due_document(2)], more=False)
