"""Replay (`telemetry replay`): re-send chosen buffered telemetry now, through the loop's own claims.

The documents matching the filters are chosen once, oldest `buffered_at` first. They are
then claimed by `_id`, a batch at a time (the loop's lease, whatever their backoff schedule), sent,
and settled as the loop settles them: tombstones once acknowledged (`keep`: released instead), rescheduled
or parked on failure. A document held by another claimant or already gone is skipped.
When `stop` is set, the batch in hand is finished and the rest left in the buffer; a
cancellation abandons the batch and releases its leases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from worker.errors import WorkerError
from worker.kafka.errors import converted
from worker.mongo.gateway import gateway_for
from worker.settings import Settings
from worker.telemetry.assembly import buffer_for
from worker.telemetry.batches import BatchRun, ChosenClaims
from worker.telemetry.buffer import Attempt, ParkedScope
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


@dataclass(frozen=True, slots=True)
class Selection:
    """Which buffered documents a replay takes."""

    workflow_id: str | None = None
    plan_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    time_field: str = "timestamp"
    min_retry_count: int | None = None
    parked: ParkedScope = ParkedScope.EXCLUDE
    limit: int | None = None

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = dict(self.parked.condition())
        if self.workflow_id is not None:
            query["correlation.workflow_id"] = self.workflow_id
        if self.plan_id is not None:
            query["correlation.plan_id"] = self.plan_id
        window = {op: at for op, at in (("$gte", self.since), ("$lt", self.until)) if at is not None}
        if window:
            query[self.time_field] = window
        if self.min_retry_count is not None:
            query["retry_count"] = {"$gte": self.min_retry_count}
        return query


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayOptions:
    """What `telemetry replay` was asked to do."""

    selection: Selection
    to_topic: str | None = None  # default: KAFKA_TELEMETRY_DELIVERY_TOPIC
    dry_run: bool = False
    keep: bool = False  # leave sent documents pending instead of settling them as tombstones


@dataclass(slots=True)
class Tally:
    """Outcomes so far: every chosen document ends as exactly one of these."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    def describe(self) -> str:
        return f"sent={self.sent} failed={self.failed} skipped={self.skipped}"


class Progress(Protocol):
    def update(self, tally: Tally) -> None: ...


class TelemetryReplay:
    """One replay's clients: the buffer on MongoDB, then a delivery producer once there is work to send."""

    def __init__(self, settings: Settings, options: ReplayOptions) -> None:
        self._settings = settings
        self._options = options
        self._gateway = gateway_for(settings)
        self.buffer = buffer_for(settings, self._gateway.database)
        self.topic = options.to_topic or settings.kafka_telemetry_delivery_topic
        self._producer: AIOKafkaProducer | None = None

    async def choose(self) -> list[Any]:
        """The `_id`s of the chosen documents, oldest buffered first; WorkerError if MongoDB fails."""
        await self._gateway.connect()
        return await self.buffer.ids_matching(self._options.selection.query(), self._options.selection.limit)

    async def start_producer(self) -> None:
        """Start the delivery producer; WorkerError (caused by aiokafka's) if Kafka cannot be used."""
        producer = create_delivery_producer(self._settings)
        try:
            await converted(producer.start())
        except WorkerError:
            await producer.stop()
            raise
        self._producer = producer

    async def send(self, ids: Sequence[Any], progress: Progress, stop: asyncio.Event) -> ReplayJob:
        """Claim, send and settle the documents of `ids` until all are done or `stop` is set; the job."""
        assert self._producer is not None, "start_producer() first"
        publisher = TelemetryPublisher(producer=self._producer, topic=self.topic)
        batch = BatchRun(buffer=self.buffer, publisher=publisher, stop=stop, keep=self._options.keep)
        job = ReplayJob(batch=batch, batch_size=self._settings.redelivery_batch_size, options=self._options)
        await job.run(ids, progress)
        return job

    async def stop_producer(self) -> None:
        """Stop the delivery producer, if started (what it still holds is flushed or failed)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def close(self) -> None:
        await self._gateway.close()


class ReplayJob:
    """Claims, sends and settles the chosen documents batch by batch (worker.telemetry.batches)."""

    def __init__(self, *, batch: BatchRun, batch_size: int, options: ReplayOptions) -> None:
        self._batch = batch
        self._batch_size = batch_size
        self._options = options
        self.stop = batch.stop
        self.tally = Tally()
        self.error: str | None = None

    async def run(self, ids: Sequence[Any], progress: Progress) -> None:
        def skipped(count: int) -> None:
            self.tally.skipped += count
            progress.update(self.tally)

        claims = ChosenClaims(self._batch.buffer, ids, self._options.selection.parked, on_skip=skipped)
        while claims.remaining and not self.stop.is_set():
            if not await self._one_batch(claims, progress):
                return

    async def _one_batch(self, claims: ChosenClaims, progress: Progress) -> bool:
        """One batch; False if MongoDB failed. A second signal (cancellation) releases its leases."""
        owner = self._batch.buffer.new_lease_owner()
        try:
            report = await self._batch.deliver(claims, owner, self._batch_size)
        except asyncio.CancelledError:
            await asyncio.shield(self._batch.buffer.release(owner))
            raise
        self._count(report.attempts, lost=report.settled.lost if report.settled else 0)
        progress.update(self.tally)
        if report.error is not None:
            self.error = f"MongoDB: {report.error.split(': ', 1)[1]}"
            return False
        return True

    def _count(self, attempts: Sequence[Attempt], *, lost: int) -> None:
        delivered = sum(1 for attempt in attempts if attempt.delivered)
        self.tally.sent += delivered
        self.tally.failed += len(attempts) - delivered
        unanswered = sum(1 for attempt in attempts if attempt.unknown)
        if unanswered:
            self.error = f"{unanswered} send(s) unanswered in time; they return when their leases lapse"
        if lost:
            self.error = f"{lost} lease(s) lapsed during the batch; those documents may be sent again"

    def interrupted(self, chosen: int) -> bool:
        """Stopped on request with some of the `chosen` documents not attempted."""
        return self.stop.is_set() and chosen > self.tally.done
