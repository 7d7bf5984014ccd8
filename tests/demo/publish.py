"""Publishing demo events, and creating the topics they need.

`python -m tests.demo.publish [COUNT]` publishes COUNT realistic events (10 % malformed)
to the topics named by the settings: the compose file's demo publisher runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tests.support.events import DemoEvent, EventFactory
from worker.kafka.clients import ProducerPurpose, connection_options, create_admin, create_producer
from worker.settings import RouteName, Settings


def all_topics(settings: Settings) -> list[str]:
    """The four input topics and their dead-letter topics."""
    inputs = [settings.topic_for(route) for route in RouteName]
    return inputs + [settings.dlq_topic(topic) for topic in inputs]


async def ensure_topics(settings: Settings, *, partitions: int = 3) -> None:
    """Create the input and dead-letter topics; existing ones are left as they are."""
    admin = create_admin(settings)
    await admin.start()
    try:
        for topic in all_topics(settings):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def publish(settings: Settings, events: Iterable[DemoEvent]) -> int:
    """Publish `events` to their routes' topics (acks=all); returns how many were sent."""
    producer = create_producer(settings, purpose=ProducerPurpose.DEMO)
    await producer.start()
    sent = 0
    try:
        for event in events:
            await producer.send(settings.topic_for(event.route), event.value, key=event.key)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_until_idle(topics: list[str], *, idle_ms: int = 1500, **options: Any) -> list[Any]:
    """Every record of `topics` from the start, read until nothing arrives for `idle_ms`.

    Read rather than counted with end offsets: tansu's ListOffsets(latest) answers the last
    batch's base offset + 1, not the high watermark (a stand-in deviation).
    """
    consumer = AIOKafkaConsumer(*topics, **options, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        while batch := await consumer.getmany(timeout_ms=idle_ms):
            records.extend(record for partition in batch.values() for record in partition)
    finally:
        await consumer.stop()
    return records


async def read_dead_letters(settings: Settings, *, idle_ms: int = 1500) -> list[Any]:
    """Every record in the four dead-letter topics."""
    topics = all_topics(settings)[len(RouteName) :]
    return await read_until_idle(topics, idle_ms=idle_ms, **connection_options(settings))


async def _main(count: int) -> None:
    settings = Settings()
    await ensure_topics(settings)
    sent = await publish(settings, EventFactory().stream(count, malformed_ratio=0.1))
    print(f"published {sent} events to {settings.kafka_bootstrap_servers}")


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
