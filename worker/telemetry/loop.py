"""The redelivery loop: `telemetry_buffer` -> KAFKA_TELEMETRY_DELIVERY_TOPIC, safe with many replicas.

Each batch (worker.telemetry.batches) claims the due documents by the batch (earliest `due_at`
first, a constant number of round trips), sends them, waits for the acknowledgements together
(acks=all), then turns the delivered into tombstones and reschedules or parks the rest
(worker.telemetry.buffer). Every PURGE_EVERY_S, busy or idle, it deletes the tombstones older than
TELEMETRY_DEDUP_WINDOW_S (one ranged delete on the `delivered_at` index; every replica's loop may
run it). When a whole batch fails (Kafka or MongoDB down) the loop backs off as a whole and
probes with one document at a time until a delivery succeeds again.

Logs: `telemetry_redelivered` (per batch, with counts), `telemetry_redelivery_failed`,
`telemetry_parked` (per document), `telemetry_lease_lost`, `telemetry_tombstones_purged`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter

from worker.errors import WorkerError
from worker.ops.health import Liveness
from worker.ops.waiting import wait_for_stop
from worker.retry import RetryPolicy
from worker.telemetry.batches import BatchReport, BatchRun, DueClaims
from worker.telemetry.buffer import Attempt, Settled, TelemetryBuffer
from worker.telemetry.delivery import TelemetryPublisher

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
PURGE_EVERY_S = 60.0
"""How often a loop deletes expired tombstones: before the first batch after this long, busy or idle."""


class RedeliveryLoop:
    """Runs batches until `stop` is set; returns after the batch in hand.

    `retry_policy` gives the pause after consecutive failed batches (its `attempts`: the parking
    limit, logged).
    """

    def __init__(
        self,
        *,
        buffer: TelemetryBuffer,
        publisher: TelemetryPublisher,
        stop: asyncio.Event,
        batch_size: int,
        idle_poll_s: float,
        retry_policy: RetryPolicy,
        ready: Callable[[], bool] = lambda: True,
        liveness: Liveness | None = None,
    ) -> None:
        self._buffer = buffer
        self._publisher = publisher
        self._stop = stop
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._retry_policy = retry_policy
        self._batch = BatchRun(buffer=buffer, publisher=publisher, stop=stop)
        self._ready = ready
        self.failures = 0
        """Consecutive failed batches; while non-zero the loop probes with one document."""
        self.liveness = liveness or Liveness()
        """Beats before each batch (bounded by the lease) and each pause: /healthz reads it."""
        self._purged_at = -PURGE_EVERY_S

    async def run(self) -> None:
        while not self._stop.is_set():
            if not self._ready():
                await self._pause(self._idle_poll_s)
                continue
            self.liveness.beat(self._buffer.lease_s)  # a batch is settled within its lease
            await self.purge_tombstones()
            report = await self._guarded_batch()
            if report.failed:
                self.failures += 1
                await self._pause(self.log_failure(report))
            else:
                self.failures = 0
                if report.claimed == 0:
                    await self._pause(self._idle_poll_s)

    async def purge_tombstones(self) -> int:
        """Delete tombstones past the dedup window, at most every PURGE_EVERY_S; never raises WorkerError.

        Not only when idle: under a load the loop never catches up with, tombstones would pile up."""
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
                     window_s=self._buffer.dedup_window_s)  # fmt: skip
        return purged

    async def _guarded_batch(self) -> BatchReport:
        try:
            return await self.deliver_batch(1 if self.failures else self._batch_size)
        except Exception as exc:  # a bug must not end delivery for good: report it, back off, go on
            log.exception("telemetry_redelivery_crashed", error=f"{type(exc).__name__}: {exc}")
            return BatchReport(error=f"crash: {type(exc).__name__}: {exc}")

    async def _pause(self, seconds: float) -> None:
        self.liveness.beat(seconds)
        await wait_for_stop(self._stop, seconds)

    async def deliver_batch(self, size: int) -> BatchReport:
        """Claim up to `size` due documents, send them, settle them; never raises WorkerError."""
        started = time.monotonic()
        report = await self._batch.deliver(DueClaims(self._buffer), self._buffer.new_lease_owner(), size)
        if report.settled is not None:
            _log_batch(report, report.settled, self._publisher.topic, time.monotonic() - started,
                       self._retry_policy.attempts)  # fmt: skip
        return report

    def log_failure(self, report: BatchReport) -> float:
        """Count and log a failed batch; the pause before the next one."""
        delay = self._retry_policy.backoff_s(self.failures)
        errors = [a.error for a in report.attempts if a.error]
        stage = report.stage or "kafka"
        REDELIVERY_FAILURES.labels(stage=stage).inc()
        log.warning(
            "telemetry_redelivery_failed",
            topic=self._publisher.topic,
            stage=stage,
            error=report.first_error(),
            claimed=report.claimed,
            failed=len(errors),
            consecutive_failures=self.failures,
            retry_in_s=round(delay, 3),
        )
        return delay


def _log_batch(
    report: BatchReport, settled: Settled, topic: str, elapsed_s: float, max_attempts: int
) -> None:
    """The batch's line and counters, then its partial failures, parked documents and lost leases."""
    failed = [a for a in report.attempts if not a.delivered]
    for outcome, count in (("delivered", settled.removed), ("rescheduled", settled.rescheduled),
                           ("parked", len(settled.parked)), ("unanswered", settled.unknown),
                           ("lost", settled.lost)):  # fmt: skip
        if count:
            REDELIVERY_OUTCOMES.labels(outcome=outcome).inc(count)
    log.info("telemetry_redelivered", topic=topic, claimed=report.claimed,
             delivered=len(report.attempts) - len(failed), rescheduled=settled.rescheduled,
             parked=len(settled.parked), unanswered=settled.unknown, lease_lost=settled.lost,
             duration_ms=round(elapsed_s * 1000, 1))  # fmt: skip
    if failed and not report.broker_down:
        ids = [str(a.document["_id"]) for a in failed[:10]]
        REDELIVERY_FAILURES.labels(stage="kafka").inc()
        log.warning("telemetry_redelivery_failed", topic=topic, stage="kafka", failed=len(failed),
                    error=failed[0].error, buffer_ids=ids)  # fmt: skip
    _log_parked(settled, failed, max_attempts)
    if settled.lost:
        log.warning("telemetry_lease_lost", topic=topic, documents=settled.lost,
                    hint="a batch outlived its lease; another claimant may deliver these again")  # fmt: skip


def _log_parked(settled: Settled, failed: list[Attempt], max_attempts: int) -> None:
    for document in settled.parked:
        error = next((a.error for a in failed if a.document["_id"] == document["_id"]), None)
        log.error(
            "telemetry_parked",
            buffer_id=str(document["_id"]),
            workflow_id=document.get("correlation", {}).get("workflow_id"),
            retry_count=document.get("retry_count"),
            max_attempts=max_attempts,
            last_error=error,
        )


@dataclass(slots=True)
class DrainTotals:
    """What `drain_due` settled, over all its batches."""

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
            return totals, report.first_error() or "failed"
        if report.claimed == 0:
            return totals, None
