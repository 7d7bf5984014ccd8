"""The redelivery's edges: build the loop from Settings, run it for `run`/`redeliver`, or once.

Only this module (of telemetry/) reads Settings: the buffer, the batches and the loop take
the few values they use.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.mongo.collections import Document
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.ops.metrics import Liveness
from worker.ops.waiting import wait_for_stop
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.buffer import Settled, TelemetryBuffer
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer
from worker.telemetry.loop import REDELIVERY_FAILURES, RedeliveryLoop

log = structlog.get_logger(__name__)


def buffer_for(settings: Settings, database: Callable[[], AsyncDatabase[Document]]) -> TelemetryBuffer:
    """The telemetry_buffer's claims with the lease, backoff and dedup window of `settings`."""
    return TelemetryBuffer(
        database=database,
        lease_s=settings.redelivery_lease_s,
        backoff=RetryPolicy.for_redelivery(settings),
        dedup_window_s=settings.telemetry_dedup_window_s,
    )


def loop_for(
    settings: Settings,
    gateway: MongoGateway,
    producer: AIOKafkaProducer,
    stop: asyncio.Event,
    liveness: Liveness | None = None,
) -> RedeliveryLoop:
    """A redelivery loop on `gateway` and `producer`, paced by `settings`; runs once MongoDB has answered."""
    return RedeliveryLoop(
        buffer=buffer_for(settings, gateway.database),
        publisher=TelemetryPublisher(producer=producer, topic=settings.kafka_telemetry_delivery_topic),
        stop=stop,
        batch_size=settings.redelivery_batch_size,
        lease_s=settings.redelivery_lease_s,
        idle_poll_s=settings.redelivery_idle_poll_s,
        backoff=RetryPolicy.for_redelivery(settings),
        ready=lambda: gateway.connected,
        liveness=liveness,
    )


async def start_producer(
    producer: AIOKafkaProducer,
    *,
    backoff: RetryPolicy,
    beat_s: float,
    stop: asyncio.Event,
    liveness: Liveness,
) -> bool:
    """Start `producer`, retrying with `backoff`; False if `stop` came first. Beats within `beat_s`."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        liveness.beat(beat_s)
        try:
            await producer.start()
            return True
        except KafkaError as exc:
            delay = backoff.backoff_s(attempt)
            REDELIVERY_FAILURES.labels(stage="kafka_connect").inc()
            log.warning("telemetry_redelivery_failed", stage="kafka_connect", attempt=attempt,
                        error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 3))  # fmt: skip
            liveness.beat(delay)
            await wait_for_stop(stop, delay)
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
        backoff, lease_s = RetryPolicy.for_redelivery(settings), settings.redelivery_lease_s
        if not await start_producer(producer, backoff=backoff, beat_s=lease_s, stop=stop, liveness=liveness):
            return
        loop = loop_for(settings, gateway, producer, stop, liveness)
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
            return totals, report.first_error() or "failed"
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
        started = time.monotonic()
        loop = loop_for(settings, gateway, producer, stop)
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
