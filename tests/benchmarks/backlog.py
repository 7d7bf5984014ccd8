"""The benchmark's input: realistic events of the four kinds, pre-produced to Kafka.

Each phase reads the same backlog with a consumer group of its own, so every phase sees
exactly the same records. End offsets are taken from the producer's acknowledgements, not
from ListOffsets (tansu answers that one differently, see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from tests.support.events import DemoEvent, EventFactory
from worker.settings import RouteName, Settings

PARTITIONS = 3
SEED = 11


@dataclass
class Backlog:
    """What was produced: per partition the offset after the last record, and publish times."""

    settings: Settings
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    published_at: dict[tuple[str, int, int], float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.ends.values())

    @property
    def topics(self) -> list[str]:
        return [self.settings.topic_for(route) for route in RouteName]


def bench_settings(*, name: str, bootstrap: str, mongo_uri: str, **overrides: Any) -> Settings:
    """The worker's default settings, on this run's own topics, group and database."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "mongodb_uri": mongo_uri,
        "mongodb_database": name.replace(".", "_"),
        "kafka_consumer_group": f"{name}-group",
        "kafka_topic_validation": f"{name}.validation",
        "kafka_topic_results": f"{name}.results",
        "kafka_topic_incidents": f"{name}.incidents",
        "kafka_topic_telemetry": f"{name}.telemetry",
        "redelivery_enabled": False,
        "http_port": 0,
        **overrides,
    }
    return Settings(**values)


async def create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        inputs = [settings.topic_for(route) for route in RouteName]
        wanted = [NewTopic(t, PARTITIONS, 1) for t in inputs]
        wanted += [NewTopic(settings.dlq_topic(t), 1, 1) for t in inputs]
        for topic in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()


def events(count: int, *, seed: int = SEED) -> Iterator[DemoEvent]:
    """`count` good events, the four kinds in turn (the demo's factory)."""
    return EventFactory(seed=seed).stream(count)


def route_events(route: RouteName, count: int, *, seed: int = SEED) -> Iterator[DemoEvent]:
    """`count` good events of one route (the demo's factory), keyed by workflow like `events`."""
    factory = EventFactory(seed=seed)
    for _ in range(count):
        event = factory.good(route)
        key = str(event.get("workflow_id") or event.get("correlation", {}).get("workflow_id"))
        yield DemoEvent(route, key.encode(), orjson.dumps(event), valid=True)


def stamped(event: DemoEvent, now: float) -> bytes:
    """The event with its own timestamp set to `now` (publish time), for latency runs."""
    payload = orjson.loads(event.value)
    field_name = "consolidated_at" if event.route is RouteName.RESULTS else "timestamp"
    payload[field_name] = datetime.fromtimestamp(now, UTC).isoformat()
    return orjson.dumps(payload)


class Publisher:
    """An acks=all producer that records where each record landed (and when it was sent)."""

    def __init__(self, backlog: Backlog, *, keep_times: bool = False) -> None:
        self._backlog = backlog
        self._keep_times = keep_times
        self._producer = AIOKafkaProducer(
            bootstrap_servers=backlog.settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._producer.flush()
        finally:
            await self._producer.stop()

    async def send(self, event: DemoEvent, *, stamp: bool = False) -> None:
        now = time.time()
        value = stamped(event, now) if stamp else event.value
        topic = self._backlog.settings.topic_for(event.route)
        future = await self._producer.send(topic, value, key=event.key)
        future.add_done_callback(lambda done: self._landed(done, now))

    def _landed(self, done: asyncio.Future[Any], sent_at: float) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        meta = done.result()
        tp = TopicPartition(meta.topic, meta.partition)
        self._backlog.ends[tp] = max(self._backlog.ends.get(tp, 0), meta.offset + 1)
        if self._keep_times:
            self._backlog.published_at[(meta.topic, meta.partition, meta.offset)] = sent_at


async def produce_backlog(settings: Settings, count: int, *, route: RouteName | None = None) -> Backlog:
    """Create the topics and publish `count` events (the four kinds in turn, or `route`'s only);
    returns once all are acknowledged."""
    await create_topics(settings)
    backlog = Backlog(settings)
    async with Publisher(backlog) as publisher:
        for event in events(count) if route is None else route_events(route, count):
            await publisher.send(event)
    return backlog


def all_done(ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]) -> bool:
    return all((committed.get(tp) or 0) >= end for tp, end in ends.items())


TICK_S = 0.02
"""How often a steady publisher catches up with its schedule."""


async def publish_steadily(
    publisher: Publisher, stream: Iterator[DemoEvent], rate: float, *, until: asyncio.Event | None = None,
    count: int | None = None,
) -> int:  # fmt: skip
    """Publish stamped events at `rate` per second (the first at once) until `until` is set or
    `count` are sent; returns how many were sent."""
    started, sent = time.monotonic(), 0
    while not (until is not None and until.is_set()) and not (count is not None and sent >= count):
        due = int(rate * (time.monotonic() - started)) + 1
        while sent < due and (count is None or sent < count):
            await publisher.send(next(stream), stamp=True)
            sent += 1
        await asyncio.sleep(TICK_S)
    return sent
