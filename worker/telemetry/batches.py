"""One batch of redelivery: claim documents, send each as it is claimed, wait for the acks, settle.

The one implementation behind the redelivery loop (claims of the due documents, oldest first)
and `replay` (claims of chosen `_id`s). A batch is settled before its first claim's lease
lapses: claiming stops after CLAIM_SHARE_OF_LEASE of the lease, acknowledgements are awaited
until ACK_SHARE_OF_LEASE of it. MongoDB failures end the batch with `error` ("claim: ..." or
"settle: ..."); what was claimed before a failed claim is still sent and settled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from worker.errors import WorkerError
from worker.mongo.collections import Document
from worker.telemetry.buffer import Attempt, ParkedScope, Settled, TelemetryBuffer
from worker.telemetry.delivery import Pending, TelemetryPublisher

CLAIM_SHARE_OF_LEASE = 0.25
ACK_SHARE_OF_LEASE = 0.75


class Skip(Enum):
    """A claim that took nothing this time, but the next one may: go on claiming."""

    SKIPPED = "skipped"


Claimed = Document | Attempt | Literal[Skip.SKIPPED] | None
"""A document to send, an Attempt settled without sending, a skip, or None: nothing more to claim."""


class ClaimSource(Protocol):
    async def claim(self, owner: str) -> Claimed: ...


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
    """The redelivery loop's claims: the oldest due documents; the exhausted are parked unsent."""

    def __init__(self, buffer: TelemetryBuffer) -> None:
        self._buffer = buffer

    async def claim(self, owner: str) -> Claimed:
        document = await self._buffer.claim_next_due(owner)
        if document is None or not self._buffer.exhausted(document):
            return document
        error = f"no outcome after {document['retry_count'] - 1} attempts (leases lapsed)"
        return Attempt(document, error=error, permanent=True)


class ChosenClaims:
    """`replay`'s claims: the chosen `_id`s in order, whatever their schedule; the unclaimable are skipped."""

    def __init__(
        self, buffer: TelemetryBuffer, ids: Sequence[Any], parked: ParkedScope, on_skip: Callable[[], None]
    ) -> None:
        self._buffer = buffer
        self._ids = ids
        self._parked = parked
        self._on_skip = on_skip
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self._ids) - self.position

    async def claim(self, owner: str) -> Claimed:
        if not self.remaining:
            return None
        document_id = self._ids[self.position]
        self.position += 1
        document = await self._buffer.claim_by_id(document_id, owner, self._parked)
        if document is None:  # held by another claimant, or gone
            self._on_skip()
            return Skip.SKIPPED
        return document


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRun:
    """What one batch needs besides its claims."""

    buffer: TelemetryBuffer
    publisher: TelemetryPublisher
    lease_s: float
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
        deadline = started + self.lease_s * ACK_SHARE_OF_LEASE
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
        claim_until = time.monotonic() + self.lease_s * CLAIM_SHARE_OF_LEASE
        while len(pending) < size and not self.stop.is_set() and time.monotonic() < claim_until:
            try:
                claimed = await claims.claim(owner)
            except WorkerError as exc:
                report.error = f"claim: {exc}"
                break
            if claimed is None:
                break
            if claimed is Skip.SKIPPED:
                continue
            if isinstance(claimed, Attempt):
                pending.append((claimed.document, claimed))
            else:
                pending.append(await self.publisher.send(claimed))
        report.claimed = len(pending)
        return pending
