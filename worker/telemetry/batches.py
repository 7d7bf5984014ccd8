"""One batch of redelivery: claim documents, send them, wait for the acks together, settle.

The one implementation behind the redelivery loop (claims of the due documents, earliest due
first) and `replay` (claims of chosen `_id`s). Claims are taken by the batch
(worker.telemetry.buffer: two round trips a claim round, three when contended); a batch makes at
most MAX_CLAIM_ROUNDS rounds, more than one only when another claimant won some of what a round
read. A batch is settled before its leases
lapse: claiming stops after CLAIM_SHARE_OF_LEASE of the lease, acknowledgements are awaited until
ACK_SHARE_OF_LEASE of it. MongoDB failures end the batch with `error` ("claim: ..." or
"settle: ..."); what was claimed before a failed claim is still sent and settled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.errors import WorkerError
from worker.mongo.collections import Document
from worker.telemetry.buffer import Attempt, ParkedScope, Settled, TelemetryBuffer
from worker.telemetry.delivery import Pending, TelemetryPublisher

CLAIM_SHARE_OF_LEASE = 0.25
ACK_SHARE_OF_LEASE = 0.75
MAX_CLAIM_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class ClaimRound:
    """What one round of claims took: documents to send, or Attempts settled without sending."""

    claimed: list[Document | Attempt]
    more: bool
    """Another round may take more (a claimant won part of this round's read, or chosen ids remain)."""


class ClaimSource(Protocol):
    async def claim(self, owner: str, want: int) -> ClaimRound: ...


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    settled: Settled | None = None
    error: str | None = None
    """What cut the batch short: "claim: ..." or "settle: ..." (MongoDB), or "crash: ..." (a bug)."""

    @property
    def stage(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None

    @property
    def broker_down(self) -> bool:
        """Every attempt failed, and not because of the documents themselves."""
        return bool(self.attempts) and all(not a.delivered and not a.permanent for a in self.attempts)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.broker_down

    def first_error(self) -> str | None:
        """The batch's error, else the first failed attempt's."""
        return self.error or next((a.error for a in self.attempts if a.error), None)


class DueClaims:
    """The redelivery loop's claims: the earliest due documents; the exhausted are parked unsent."""

    def __init__(self, buffer: TelemetryBuffer) -> None:
        self._buffer = buffer

    async def claim(self, owner: str, want: int) -> ClaimRound:
        claim = await self._buffer.claim_due(owner, want)
        return ClaimRound(claimed=[self._unless_exhausted(d) for d in claim.documents], more=claim.more)

    def _unless_exhausted(self, document: Document) -> Document | Attempt:
        if not self._buffer.exhausted(document):
            return document
        error = f"no outcome after {document['retry_count'] - 1} attempts (leases lapsed)"
        return Attempt(document, error=error, permanent=True)


class ChosenClaims:
    """`replay`'s claims: the chosen `_id`s in order, whatever their schedule; the unclaimable are skipped."""

    def __init__(
        self, buffer: TelemetryBuffer, ids: Sequence[Any], parked: ParkedScope, on_skip: Callable[[int], None]
    ) -> None:
        self._buffer = buffer
        self._ids = ids
        self._parked = parked
        self._on_skip = on_skip
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self._ids) - self.position

    async def claim(self, owner: str, want: int) -> ClaimRound:
        chosen = self._ids[self.position : self.position + want]
        won = await self._buffer.claim_ids(chosen, owner, self._parked)
        self.position += len(chosen)
        if len(won) < len(chosen):  # held by another claimant, or gone
            self._on_skip(len(chosen) - len(won))
        return ClaimRound(claimed=list(won), more=self.remaining > 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRun:
    """What one batch needs besides its claims."""

    buffer: TelemetryBuffer
    """Its lease (`buffer.lease_s`) bounds the batch's claims and its wait for acknowledgements."""
    publisher: TelemetryPublisher
    stop: asyncio.Event
    keep: bool = False
    """Release the delivered (replay --keep) instead of making tombstones of them."""

    async def deliver(self, claims: ClaimSource, owner: str, size: int) -> BatchReport:
        """Claim up to `size` documents for `owner`, send them, settle them; never raises WorkerError."""
        started = time.monotonic()
        report = BatchReport()
        pending = await self._claim_and_send(claims, owner, size, report)
        if not pending:
            return report
        deadline = started + self.buffer.lease_s * ACK_SHARE_OF_LEASE
        report.attempts = await self.publisher.outcomes(
            pending, within_s=max(0.0, deadline - time.monotonic())
        )
        try:
            report.settled = await self.buffer.settle(owner, report.attempts, keep=self.keep)
        except WorkerError as exc:
            report.error = f"settle: {exc}"
        return report

    async def _claim_and_send(
        self, claims: ClaimSource, owner: str, size: int, report: BatchReport
    ) -> list[Pending]:
        pending: list[Pending] = []
        claim_until = time.monotonic() + self.buffer.lease_s * CLAIM_SHARE_OF_LEASE
        for _ in range(MAX_CLAIM_ROUNDS):
            if len(pending) >= size or self.stop.is_set() or time.monotonic() >= claim_until:
                break
            try:
                round_ = await claims.claim(owner, size - len(pending))
            except WorkerError as exc:
                report.error = f"claim: {exc}"
                break
            for claimed in round_.claimed:
                pending.append(await self._send(claimed, refusal=_refusal(pending[-1] if pending else None)))
            if not round_.more:
                break
        report.claimed = len(pending)
        return pending

    async def _send(self, claimed: Document | Attempt, *, refusal: str | None) -> Pending:
        """Queue one send, in claim order. Once the producer has refused one (the broker is away, not
        the document), the rest of the batch fails with that error unsent instead of each waiting
        out the same timeout."""
        if isinstance(claimed, Attempt):
            return claimed.document, claimed
        if refusal is not None:
            return claimed, Attempt(claimed, error=refusal)
        return await self.publisher.send(claimed)


def _refusal(last: Pending | None) -> str | None:
    """The broker's refusal of the last send (carried on to the rest of the batch), if it was one."""
    item = last[1] if last is not None else None
    if isinstance(item, Attempt) and not item.delivered and not item.permanent and not item.unknown:
        return item.error
    return None
