"""The redelivery loop: `telemetry_buffer` -> KAFKA_TELEMETRY_DELIVERY_TOPIC, safe with many replicas.

Each batch claims due documents one `find_one_and_update` at a time (oldest `buffered_at`
first), sends each as it is claimed, waits for the acknowledgements (acks=all), then turns
the delivered into tombstones and reschedules or parks the rest (worker.telemetry.buffer). When idle it
purges the tombstones older than TELEMETRY_DEDUP_WINDOW_S (at most once a minute). When a whole batch fails
(Kafka or MongoDB down) the loop backs off as a whole and probes with one document at a
time until a delivery succeeds again.

Logs: `telemetry_redelivered` (per batch, with counts), `telemetry_redelivery_failed`,
`telemetry_parked` (per document), `telemetry_lease_lost`, `telemetry_tombstones_purged`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from worker.errors import WorkerError
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.ops.health import Liveness
from worker.settings import Settings
from worker.telemetry.buffer import Attempt, Settled, TelemetryBuffer, backoff_s
from worker.telemetry.delivery import Pending, TelemetryPublisher, create_delivery_producer

log = structlog.get_logger(__name__)

REDELIVERY_OUTCOMES = Counter(
    "persistence_telemetry_redelivery_total",
    "Buffered telemetry documents settled, by outcome (delivered, rescheduled, parked, unanswered, lost)",
    ["outcome"],
)
REDELIVERY_FAILURES = Counter(
    "persistence_telemetry_redelivery_failures_total",
    "telemetry_redelivery_failed events, by stage (kafka, kafka_connect, claim, settle, crash)",
    ["stage"],
)
# A batch must be settled before its first claim's lease lapses: claiming stops after this
# share of the lease, and acknowledgements are awaited until this one.
CLAIM_SHARE_OF_LEASE = 0.25
ACK_SHARE_OF_LEASE = 0.75
PURGE_EVERY_S = 60.0  # a purge reads the collection (no index on delivered_at): not on every idle poll


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    settled: Settled | None = None
    error: str | None = None
    """What cut the batch short: "claim: ..." or "settle: ..." (MongoDB), or "crash: ..." (a bug)."""

    @property
    def broker_down(self) -> bool:
        """Every attempt failed, and not because of the documents themselves."""
        return bool(self.attempts) and all(not a.delivered and not a.permanent for a in self.attempts)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.broker_down


class RedeliveryLoop:
    """Runs batches until `stop` is set; returns after the batch in hand."""

    def __init__(
        self,
        *,
        buffer: TelemetryBuffer,
        publisher: TelemetryPublisher,
        settings: Settings,
        stop: asyncio.Event,
        ready: Callable[[], bool] = lambda: True,
        liveness: Liveness | None = None,
    ) -> None:
        self._buffer = buffer
        self._publisher = publisher
        self._settings = settings
        self._stop = stop
        self._ready = ready
        self.failures = 0
        """Consecutive failed batches; while non-zero the loop probes with one document."""
        self.liveness = liveness or Liveness()
        """Beats before each batch (bounded by the lease) and each pause: /healthz reads it."""
        self._purged_at = -PURGE_EVERY_S

    async def run(self) -> None:
        while not self._stop.is_set():
            if not self._ready():
                await self._pause(self._settings.redelivery_idle_poll_s)
                continue
            self.liveness.beat(self._settings.redelivery_lease_s)  # a batch is settled within its lease
            report = await self._guarded_batch()
            if report.failed:
                self.failures += 1
                await self._pause(self.log_failure(report))
            else:
                self.failures = 0
                if report.claimed == 0:
                    await self.purge_tombstones()
                    await self._pause(self._settings.redelivery_idle_poll_s)

    async def purge_tombstones(self) -> int:
        """Delete tombstones past the dedup window, at most every PURGE_EVERY_S; never raises WorkerError."""
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY_S:
            return 0
        self._purged_at = now
        try:
            purged = await self._buffer.purge_tombstones()
        except WorkerError as exc:
            log.warning("telemetry_tombstones_purge_failed", error=str(exc))
            return 0
        if purged:
            log.info("telemetry_tombstones_purged", documents=purged,
                     window_s=self._settings.telemetry_dedup_window_s)  # fmt: skip
        return purged

    async def _guarded_batch(self) -> BatchReport:
        try:
            return await self.deliver_batch(1 if self.failures else self._settings.redelivery_batch_size)
        except Exception as exc:  # a bug must not end delivery for good: report it, back off, go on
            log.exception("telemetry_redelivery_crashed", error=f"{type(exc).__name__}: {exc}")
            return BatchReport(error=f"crash: {type(exc).__name__}: {exc}")

    async def _pause(self, seconds: float) -> None:
        self.liveness.beat(seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def deliver_batch(self, size: int) -> BatchReport:
        """Claim up to `size` due documents, send them, settle them; never raises WorkerError."""
        started = time.monotonic()
        owner = self._buffer.new_lease_owner()
        report = BatchReport()
        pending = await self._claim_and_send(owner, size, report)
        if not pending:
            return report
        deadline = started + self._settings.redelivery_lease_s * ACK_SHARE_OF_LEASE
        report.attempts = await self._publisher.outcomes(
            pending, within_s=max(0.0, deadline - time.monotonic())
        )
        try:
            report.settled = await self._buffer.settle(owner, report.attempts)
        except WorkerError as exc:
            report.error = f"settle: {exc}"
            return report
        _log_batch(report, self._publisher.topic, time.monotonic() - started, self._settings)
        return report

    async def _claim_and_send(self, owner: str, size: int, report: BatchReport) -> list[Pending]:
        pending: list[Pending] = []
        claim_until = time.monotonic() + self._settings.redelivery_lease_s * CLAIM_SHARE_OF_LEASE
        while len(pending) < size and not self._stop.is_set() and time.monotonic() < claim_until:
            try:
                document = await self._buffer.claim_next_due(owner)
            except WorkerError as exc:
                report.error = f"claim: {exc}"
                break
            if document is None:
                break
            if self._buffer.exhausted(document):
                error = f"no outcome after {document['retry_count'] - 1} attempts (leases lapsed)"
                pending.append((document, Attempt(document, error=error, permanent=True)))
            else:
                pending.append(await self._publisher.send(document))
        report.claimed = len(pending)
        return pending

    def log_failure(self, report: BatchReport) -> float:
        delay = backoff_s(self._settings, self.failures)
        errors = [a.error for a in report.attempts if a.error]
        stage = report.error.split(":", 1)[0] if report.error else "kafka"
        REDELIVERY_FAILURES.labels(stage=stage).inc()
        log.warning(
            "telemetry_redelivery_failed",
            topic=self._publisher.topic,
            stage=stage,
            error=report.error or (errors[0] if errors else None),
            claimed=report.claimed,
            failed=len(errors),
            consecutive_failures=self.failures,
            retry_in_s=round(delay, 3),
        )
        return delay


def _log_batch(report: BatchReport, topic: str, elapsed_s: float, settings: Settings) -> None:
    settled = report.settled
    assert settled is not None
    failed = [a for a in report.attempts if not a.delivered]
    delivered = len(report.attempts) - len(failed)
    for outcome, count in (("delivered", settled.removed), ("rescheduled", settled.rescheduled),
                           ("parked", len(settled.parked)), ("unanswered", settled.unknown),
                           ("lost", settled.lost)):  # fmt: skip
        if count:
            REDELIVERY_OUTCOMES.labels(outcome=outcome).inc(count)
    log.info(
        "telemetry_redelivered",
        topic=topic,
        claimed=report.claimed,
        delivered=delivered,
        rescheduled=settled.rescheduled,
        parked=len(settled.parked),
        unanswered=settled.unknown,
        lease_lost=settled.lost,
        duration_ms=round(elapsed_s * 1000, 1),
    )
    if failed and not report.broker_down:
        ids = [str(a.document["_id"]) for a in failed[:10]]
        REDELIVERY_FAILURES.labels(stage="kafka").inc()
        log.warning("telemetry_redelivery_failed", topic=topic, stage="kafka", failed=len(failed),
                    error=failed[0].error, buffer_ids=ids)  # fmt: skip
    for document in settled.parked:
        error = next((a.error for a in failed if a.document["_id"] == document["_id"]), None)
        log.error(
            "telemetry_parked",
            buffer_id=str(document["_id"]),
            workflow_id=document.get("correlation", {}).get("workflow_id"),
            retry_count=document.get("retry_count"),
            max_attempts=settings.telemetry_max_delivery_attempts,
            last_error=error,
        )
    if settled.lost:
        log.warning("telemetry_lease_lost", topic=topic, documents=settled.lost,
                    hint="a batch outlived its lease; another claimant may deliver these again")  # fmt: skip


async def start_producer(
    producer: AIOKafkaProducer, settings: Settings, stop: asyncio.Event, liveness: Liveness | None = None
) -> bool:
    """Start `producer`, retrying with the redelivery backoff; False if `stop` came first."""
    liveness = liveness or Liveness()
    attempt = 0
    while not stop.is_set():
        attempt += 1
        liveness.beat(settings.redelivery_lease_s)
        try:
            await producer.start()
            return True
        except KafkaError as exc:
            delay = backoff_s(settings, attempt)
            REDELIVERY_FAILURES.labels(stage="kafka_connect").inc()
            log.warning("telemetry_redelivery_failed", stage="kafka_connect", attempt=attempt,
                        error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 3))  # fmt: skip
            liveness.beat(delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def redeliver_until_stopped(
    settings: Settings, gateway: MongoGateway, stop: asyncio.Event, liveness: Liveness | None = None
) -> None:
    """The loop with a producer of its own; waits for MongoDB via `gateway.connected`.

    `liveness` beats while the loop (or its producer's start) makes progress: /healthz reads it.
    """
    producer = create_delivery_producer(settings)
    liveness = liveness or Liveness()
    try:
        if not await start_producer(producer, settings, stop, liveness):
            return
        loop = RedeliveryLoop(
            buffer=TelemetryBuffer(database=gateway.database, settings=settings),
            publisher=TelemetryPublisher(producer=producer, topic=settings.kafka_telemetry_delivery_topic),
            settings=settings,
            stop=stop,
            ready=lambda: gateway.connected,
            liveness=liveness,
        )
        log.info("telemetry_redelivery_started", topic=settings.kafka_telemetry_delivery_topic,
                 batch_size=settings.redelivery_batch_size, lease_s=settings.redelivery_lease_s)  # fmt: skip
        await loop.run()
    finally:
        await producer.stop()


@dataclass(slots=True)
class DrainTotals:
    delivered: int = 0
    rescheduled: int = 0
    parked: int = 0
    lost: int = 0

    def add(self, settled: Settled) -> None:
        self.delivered += settled.removed
        self.rescheduled += settled.rescheduled
        self.parked += len(settled.parked)
        self.lost += settled.lost


async def drain_due(loop: RedeliveryLoop, batch_size: int) -> tuple[DrainTotals, str | None]:
    """Batches until nothing is due (or a batch fails as a whole: its error is returned)."""
    totals = DrainTotals()
    while True:
        report = await loop.deliver_batch(batch_size)
        if report.settled is not None:
            totals.add(report.settled)
        if report.failed:
            loop.failures += 1
            loop.log_failure(report)
            errors = [a.error for a in report.attempts if a.error]
            return totals, report.error or (errors[0] if errors else "failed")
        if report.claimed == 0:
            return totals, None


async def redeliver_once(settings: Settings, stop: asyncio.Event) -> int:
    """`redeliver --once`: deliver what is due now and exit; 0 if all went, 1 if not, 3 if unreachable."""
    gateway = gateway_for(settings)
    producer = create_delivery_producer(settings)
    try:
        try:
            await gateway.connect()
            await producer.start()
        except (WorkerError, KafkaError) as exc:
            print(f"error: cannot reach the servers: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 3
        loop = RedeliveryLoop(
            buffer=TelemetryBuffer(database=gateway.database, settings=settings),
            publisher=TelemetryPublisher(producer=producer, topic=settings.kafka_telemetry_delivery_topic),
            settings=settings,
            stop=stop,
        )
        started = time.monotonic()
        totals, error = await drain_due(loop, settings.redelivery_batch_size)
    finally:
        await producer.stop()
        await gateway.close()
    elapsed = time.monotonic() - started
    print(
        f"redeliver: delivered={totals.delivered} rescheduled={totals.rescheduled} parked={totals.parked} "
        f"in {elapsed:.1f}s ({totals.delivered / max(elapsed, 1e-9):.0f} documents/s)"
        + (f"; stopped: {error}" if error else "")
    )
    clean = error is None and not (totals.rescheduled or totals.parked or totals.lost or stop.is_set())
    return 0 if clean else 1
