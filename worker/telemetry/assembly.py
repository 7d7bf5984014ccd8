"""The redelivery made from Settings: the buffer, the loop, and the loop run with a producer of its own
for `run` and `telemetry redeliver`.

Only this module (of telemetry/) reads Settings: the buffer, the batches and the loop take
the few values they use (the lease length, the buffer's alone: the others ask it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.kafka.errors import converted
from worker.mongo.collections import Document
from worker.mongo.gateway import MongoGateway
from worker.ops.health import Liveness
from worker.ops.waiting import wait_for_stop
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.buffer import TelemetryBuffer
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer
from worker.telemetry.loop import REDELIVERY_FAILURES, RedeliveryLoop

log = structlog.get_logger(__name__)


def buffer_for(settings: Settings, database: Callable[[], AsyncDatabase[Document]]) -> TelemetryBuffer:
    """The telemetry_buffer's claims with the lease, retry policy and dedup window of `settings`."""
    return TelemetryBuffer(
        database=database,
        lease_s=settings.redelivery_lease_s,
        retry_policy=RetryPolicy.for_redelivery(settings),
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
        idle_poll_s=settings.redelivery_idle_poll_s,
        retry_policy=RetryPolicy.for_redelivery(settings),
        ready=lambda: gateway.connected,
        liveness=liveness,
    )


async def start_producer(
    producer: AIOKafkaProducer,
    *,
    retry_policy: RetryPolicy,
    beat_s: float,
    stop: asyncio.Event,
    liveness: Liveness,
) -> bool:
    """Start `producer`, retrying per `retry_policy`; False if `stop` came first. Beats within `beat_s`."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        liveness.beat(beat_s)
        try:
            await converted(producer.start())
            return True
        except WorkerError as exc:
            delay = retry_policy.backoff_s(attempt)
            REDELIVERY_FAILURES.labels(stage="kafka_connect").inc()
            log.warning("telemetry_redelivery_failed", stage="kafka_connect", attempt=attempt,
                        error=str(exc), retry_in_s=round(delay, 3))  # fmt: skip
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
        retry_policy, lease_s = RetryPolicy.for_redelivery(settings), settings.redelivery_lease_s
        if not await start_producer(
            producer, retry_policy=retry_policy, beat_s=lease_s, stop=stop, liveness=liveness
        ):
            return
        loop = loop_for(settings, gateway, producer, stop, liveness)
        log.info("telemetry_redelivery_started", topic=settings.kafka_telemetry_delivery_topic,
                 batch_size=settings.redelivery_batch_size, lease_s=settings.redelivery_lease_s)  # fmt: skip
        await loop.run()
    finally:
        await producer.stop()
