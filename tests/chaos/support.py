"""Pieces the chaos scenarios share: mixing poison into a stream, waiting for the group to commit
everything, and reading a worker's JSON log."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from tests.chaos.invariant import Published, good_events
from tests.integration.harness import WorkerProcess, input_topics, wait_until
from worker.demo.events import EventFactory
from worker.settings import RouteName, Settings

# tansu hands a dead member's partitions over only after the session timeout, and a new group's
# first join waits half of it: keep it short so restarts and rebalances are quick.
QUICK_GROUP = {"kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 300}


def mixed_stream(run: str, count: int, *, seed: int, malformed_share: float = 0.0) -> list[Published]:
    """`count` records over the four routes: good ones, and about `malformed_share` of the
    demo's malformed kinds (which must be dead-lettered)."""
    chooser = random.Random(seed)
    factory = EventFactory(seed=seed + 1)
    records = good_events(run, count, seed=seed)
    for index, record in enumerate(records):
        if chooser.random() < malformed_share:
            records[index] = Published(
                f"{record.chaos_id}-bad", record.route, factory.malformed(record.route)
            )
    return records


async def committed_total(settings: Settings, topics: Sequence[str] | None = None) -> int:
    """The sum of the group's committed offsets over every partition of `topics` (default: the inputs)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.kafka_consumer_group, enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        total = 0
        for topic in topics or input_topics(settings):
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def wait_all_committed(settings: Settings, count: int, *, within: float) -> None:
    """Wait until the group has committed past `count` records in all (every one published)."""

    async def done() -> bool:
        return await committed_total(settings) >= count

    await wait_until(done, within=within, what=f"{count} offsets committed")


def log_events(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (other lines, e.g. a traceback, are left out)."""
    lines = []
    for line in worker.log_text().splitlines():
        if line.startswith("{"):
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return lines


def count_events(worker: WorkerProcess, name: str) -> int:
    return sum(1 for line in log_events(worker) if line.get("event") == name)


async def stored_total(db: Any) -> int:
    from tests.chaos.invariant import COLLECTION

    return sum([await db[name].count_documents({}) for name in COLLECTION.values()])


def good_count(records: Sequence[Published], route: RouteName | None = None) -> int:
    return sum(1 for r in records if r.document_id is not None and (route is None or r.route is route))
