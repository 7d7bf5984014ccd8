"""Pieces the chaos scenarios share: mixing poison into a stream, waiting for the group to commit
everything, and reading a worker's JSON log."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from tests.chaos.invariant import Published, good_events
from tests.integration.harness import WorkerProcess, input_topics, prepare_topics, settings_for, wait_until
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from worker.settings import RouteName, Settings

# tansu hands a dead member's partitions over only after the session timeout, and a new group's
# first join waits half of it: keep it short so restarts and rebalances are quick.
QUICK_GROUP = {"kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 300}
# The redelivery loop runs inside every worker, as in production (REDELIVERY_ENABLED's default),
# with short leases and waits so that a killed loop's claims come back within the scenario.
REDELIVERY_ON = {
    "redelivery_enabled": True,
    "redelivery_lease_s": 6.0,
    "redelivery_backoff_base_s": 0.2,
    "redelivery_backoff_cap_s": 1.0,
    "redelivery_idle_poll_s": 0.5,
}


def chaos_settings(*, name: str, bootstrap: str, mongo_uri: str, **overrides: Any) -> Settings:
    """A scenario's settings: its own topics and database, a quick group, and the redelivery loop
    on, delivering to `<name>.delivered` (which the invariant reads)."""
    values = {
        **QUICK_GROUP,
        **REDELIVERY_ON,
        "kafka_telemetry_delivery_topic": f"{name}.delivered",
        **overrides,
    }
    return settings_for(name=name, bootstrap=bootstrap, mongo_uri=mongo_uri, **values)


async def prepare_chaos_topics(create_topics: Callable[..., Awaitable[None]], settings: Settings) -> None:
    """The input and dead-letter topics, and the telemetry delivery topic."""
    await prepare_topics(create_topics, settings)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)


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


async def wait_all_committed(
    settings: Settings, count: int, *, within: float, stalled_after: float | None = None
) -> None:
    """Wait until the group has committed past `count` records in all (every one published);
    with `stalled_after`, fail early once the committed total has not moved for that long."""
    progress = {"total": -1, "since": time.monotonic()}

    async def done() -> bool:
        total = await committed_total(settings)
        if total != progress["total"]:
            progress.update(total=total, since=time.monotonic())
        elif stalled_after is not None and time.monotonic() - progress["since"] > stalled_after:
            raise AssertionError(f"commits stalled at {total} of {count} for {stalled_after:.0f}s "
                                 "(read the worker log)")  # fmt: skip
        return total >= count

    await wait_until(done, within=within, what=f"{count} offsets committed")


async def committed_or_stalled(
    settings: Settings, count: int, *, within: float, stalled_after: float
) -> str | None:
    """`wait_all_committed`, but a stall or timeout is returned (None: all committed), so that the
    scenario can still count what became of every record before it fails."""
    try:
        await wait_all_committed(settings, count, within=within, stalled_after=stalled_after)
    except AssertionError as exc:
        return str(exc)
    return None


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
    return sum([await db[name].count_documents({}) for name in COLLECTION.values()])


def good_count(records: Sequence[Published], route: RouteName | None = None) -> int:
    return sum(1 for r in records if r.document_id is not None and (route is None or r.route is route))
