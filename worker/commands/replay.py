"""`persistence-worker replay`: re-send chosen buffered telemetry, through the loop's own claims.

The documents matching the filters are chosen once, oldest `buffered_at` first. They are
then claimed by `_id`, a batch at a time (the loop's lease, whatever their backoff schedule), sent,
and settled as the loop settles them: tombstones once acknowledged (`--keep`: released instead), rescheduled
or parked on failure. A document held by another claimant or already gone is skipped.
Ctrl-C (SIGINT) or SIGTERM: the batch in hand is finished and the rest left in the buffer;
a second signal abandons the batch and releases its leases.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from worker.commands.exit_codes import ExitCode
from worker.commands.progress import Reporter, Tally, reporting
from worker.commands.signals import StopOnSignals
from worker.errors import WorkerError
from worker.kafka.errors import converted
from worker.kafka.failures import kafka_failure
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import gateway_for
from worker.ops.messages import report_failure
from worker.ops.redaction import scrub
from worker.settings import Settings
from worker.telemetry.batches import BatchRun, ChosenClaims
from worker.telemetry.buffer import Attempt, ParkedScope, TelemetryBuffer
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer
from worker.telemetry.redeliver import buffer_for

SAMPLE_ROWS = 20
COLUMNS = ("buffer_id", "workflow_id", "plan_id", "source", "timestamp", "buffered_at", "retries", "state")


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


async def replay_command(settings: Settings, options: ReplayOptions) -> int:
    """Exit 0 if every chosen document was sent, 1 if not, 3 if unreachable, 130 if interrupted."""
    gateway = gateway_for(settings)
    buffer = buffer_for(settings, gateway.database)
    try:
        try:
            await gateway.connect()
            ids = await buffer.ids_matching(options.selection.query(), options.selection.limit)
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
        topic = options.to_topic or settings.kafka_telemetry_delivery_topic
        if options.dry_run:
            await print_dry_run(buffer, ids, topic)
            return ExitCode.OK
        if not ids:
            print(f"replay: nothing matches; nothing sent to {topic}")
            return ExitCode.OK
        return await _send_chosen(settings, buffer, ids, topic, options)
    finally:
        await gateway.close()


async def _send_chosen(
    settings: Settings, buffer: TelemetryBuffer, ids: list[Any], topic: str, options: ReplayOptions
) -> int:
    producer = create_delivery_producer(settings)
    try:
        await converted(producer.start())
    except WorkerError as exc:
        report_failure(kafka_failure(exc.__cause__ or exc, settings))
        await producer.stop()
        return ExitCode.UNREACHABLE
    publisher = TelemetryPublisher(producer=producer, topic=topic)
    batch = BatchRun(buffer=buffer, publisher=publisher, lease_s=settings.redelivery_lease_s,
                     stop=asyncio.Event(), keep=options.keep)  # fmt: skip
    job = ReplayJob(batch=batch, batch_size=settings.redelivery_batch_size, options=options)
    try:
        with StopOnSignals(job.stop), reporting("replay", len(ids)) as reporter:
            await job.run(ids, reporter)
    finally:
        await _stop_quietly(producer)
    return job.finish(len(ids), topic)


class ReplayJob:
    """Claims, sends and settles the chosen documents batch by batch (worker.telemetry.batches)."""

    def __init__(self, *, batch: BatchRun, batch_size: int, options: ReplayOptions) -> None:
        self._batch = batch
        self._batch_size = batch_size
        self._options = options
        self.stop = batch.stop
        self.tally = Tally()
        self.error: str | None = None

    async def run(self, ids: Sequence[Any], reporter: Reporter) -> None:
        def skipped(count: int) -> None:
            self.tally.skipped += count
            reporter.update(self.tally)

        claims = ChosenClaims(self._batch.buffer, ids, self._options.selection.parked, on_skip=skipped)
        while claims.remaining and not self.stop.is_set():
            if not await self._one_batch(claims, reporter):
                return

    async def _one_batch(self, claims: ChosenClaims, reporter: Reporter) -> bool:
        """One batch; False if MongoDB failed. A second signal (cancellation) releases its leases."""
        owner = self._batch.buffer.new_lease_owner()
        try:
            report = await self._batch.deliver(claims, owner, self._batch_size)
        except asyncio.CancelledError:
            await asyncio.shield(self._batch.buffer.release(owner))
            raise
        self._count(report.attempts, lost=report.settled.lost if report.settled else 0)
        reporter.update(self.tally)
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

    def finish(self, chosen: int, topic: str) -> int:
        """Print the summary; the exit code."""
        remaining = chosen - self.tally.done
        state = "interrupted" if self.stop.is_set() and remaining else "done"
        summary = f"replay {state}: chosen={chosen} {self.tally.describe()} not_attempted={remaining}"
        fate = "kept in the buffer" if self._options.keep else "removed from the buffer"
        error = f"; error: {self.error}" if self.error else ""
        print(scrub(f"{summary} topic={topic} (sent: {fate}){error}"))
        if self.tally.skipped:
            print(f"  {self.tally.skipped} skipped: being delivered by another worker, or no longer buffered")
        if self.stop.is_set() and remaining:
            return ExitCode.INTERRUPTED
        return ExitCode.OK if self.tally.sent == chosen and self.error is None else ExitCode.PROBLEM


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception as exc:
        print(scrub(f"warning: closing the Kafka producer: {type(exc).__name__}: {exc}"), file=sys.stderr)


async def print_dry_run(buffer: TelemetryBuffer, ids: list[Any], topic: str) -> None:
    """The count that would be sent and a table of the first rows; sends nothing."""
    print(f"dry run: {len(ids)} buffered document(s) would be sent to {topic}")
    if not ids:
        return
    first = ids[:SAMPLE_ROWS]
    found = await buffer.documents(first)
    table = Table(title=f"first {len(first)} of {len(ids)}", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for document_id in first:
        if document_id in found:
            table.add_row(*_row(found[document_id]))
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)


def _row(document: Mapping[str, Any]) -> list[str]:
    correlation = document.get("correlation") or {}
    return [
        str(document["_id"]),
        str(correlation.get("workflow_id", "")),
        str(correlation.get("plan_id", "")),
        str(document.get("source", "")),
        _when(document.get("timestamp")),
        _when(document.get("buffered_at")),
        str(document.get("retry_count", 0)),
        _state(document),
    ]


def _state(document: Mapping[str, Any]) -> str:
    if document.get("parked"):
        return f"parked: {document.get('last_error', '')}"[:80]
    if document.get("lease_owner"):
        return f"claimed by {document['lease_owner']} until {_when(document.get('lease_expires_at'))}"
    if document.get("next_attempt_at"):
        return f"retry after {_when(document['next_attempt_at'])}"
    return "due"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC)
        return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)
