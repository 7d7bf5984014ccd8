"""Helpers for the redelivery, replay and dead-letter replay tests: buffered documents as the
pipeline writes them, settings with short leases, loops in this process, reading a topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from schemas.documents import telemetry_buffer_document
from schemas.events import TelemetryEvent
from tests.integration.harness import settings_for
from tests.support.events import EventFactory
from worker.mongo.gateway import gateway_for
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.assembly import buffer_for
from worker.telemetry.batches import BatchReport
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer
from worker.telemetry.loop import RedeliveryLoop

QUICK_REDELIVERY = {
    "redelivery_lease_s": 6.0,
    "redelivery_backoff_base_s": 0.2,
    "redelivery_backoff_factor": 2.0,
    "redelivery_backoff_cap_s": 1.0,
    "redelivery_idle_poll_s": 0.2,
}


def redelivery_settings(*, name: str, bootstrap: str, mongo_uri: str, **overrides: Any) -> Settings:
    """This test's own database and topics, a delivery topic `<name>.delivered`, short leases and waits."""
    values = {"kafka_telemetry_delivery_topic": f"{name}.delivered", **QUICK_REDELIVERY, **overrides}
    return settings_for(name=name, bootstrap=bootstrap, mongo_uri=mongo_uri, **values)


def buffered_documents(count: int, *, seed: int = 1, start: datetime | None = None) -> list[dict[str, Any]]:
    """`count` telemetry_buffer documents as the pipeline stores them, buffered 1 ms apart."""
    factory = EventFactory(seed=seed)
    first = start or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    documents = []
    for index in range(count):
        event = TelemetryEvent.model_validate({**factory.telemetry(), "event_id": f"tel-{seed}-{index}"})
        documents.append(
            dict(telemetry_buffer_document(event, buffered_at=first + timedelta(milliseconds=index)))
        )
    return documents


@dataclass(frozen=True)
class Delivered:
    """One message on the delivery topic."""

    buffer_id: str
    retry_count: int
    key: bytes
    event: dict[str, Any]
    partition: int
    offset: int


async def read_delivered(bootstrap: str, topic: str, *, idle_ms: int = 1500) -> list[Delivered]:
    """Every message of `topic` from the start, read until nothing arrives for `idle_ms`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Delivered] = []
    try:
        while batch := await consumer.getmany(timeout_ms=idle_ms):
            for records in batch.values():
                found += [_delivered(record) for record in records]
    finally:
        await consumer.stop()
    return found


def _delivered(record: Any) -> Delivered:
    headers = {key: bytes(value).decode() for key, value in record.headers}
    return Delivered(
        buffer_id=headers["buffer_id"],
        retry_count=int(headers["retry_count"]),
        key=record.key,
        event=orjson.loads(record.value),
        partition=record.partition,
        offset=record.offset,
    )


class CountingLoop(RedeliveryLoop):
    """A RedeliveryLoop that keeps what each of its batches delivered."""

    delivered = 0
    batches = 0

    async def deliver_batch(self, size: int) -> BatchReport:
        report = await super().deliver_batch(size)
        if report.settled is not None:
            self.delivered += report.settled.removed
            self.batches += 1
        return report


@contextlib.asynccontextmanager
async def running_loop(settings: Settings, stop: asyncio.Event) -> AsyncIterator[CountingLoop]:
    """A redelivery loop with its own MongoDB client and producer, run as a task until `stop`."""
    gateway = gateway_for(settings)
    await gateway.connect()
    producer = create_delivery_producer(settings)
    await producer.start()
    loop = CountingLoop(
        buffer=buffer_for(settings, gateway.database),
        publisher=TelemetryPublisher(producer=producer, topic=settings.kafka_telemetry_delivery_topic),
        stop=stop,
        batch_size=settings.redelivery_batch_size,
        idle_poll_s=settings.redelivery_idle_poll_s,
        retry_policy=RetryPolicy.for_redelivery(settings),
    )
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await producer.stop()
        await gateway.close()


def as_utc(value: Any) -> datetime:
    """A stored date as an aware datetime (some servers hand back text for dates set by updates)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
