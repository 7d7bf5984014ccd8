"""The floor loop: the simplest correct consumer, which the latency phase runs like the worker.

`python -m tests.benchmarks.floor`, with the worker's environment (its servers, topics, group and
database). Poll; insert each topic's records with one unordered insert_many (`_id` the event's
`event_id`; a duplicate key is ignored, so a batch read twice is stored once); write one
`floor_saved` line per partition, as the worker writes its `*_saved` lines right after the bulk
write returns; commit the batch's offsets. Nothing else: no validation, dead letters, retries,
metrics or write gate. Its consumer is built like the worker's (`create_consumer`: same fetch
wait, sizes and batch size), and its collections carry the worker's indexes, so the servers do the
same work for both.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from tests.support.routes import COLLECTION
from worker.kafka.clients import create_consumer
from worker.mongo.indexes import ensure_indexes
from worker.settings import RouteName, Settings

Document = dict[str, Any]
DUPLICATE_KEY = 11000


def log(event: str, **fields: Any) -> None:
    """One JSON line on standard error, stamped like the worker's (ISO, UTC)."""
    line = {"event": event, **fields, "timestamp": datetime.now(UTC).isoformat()}
    os.write(2, orjson.dumps(line) + b"\n")


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """The `partitions_assigned` line the benchmark waits for before it publishes."""

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Nothing in hand: each batch is written and committed before the next poll."""

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


def document(value: bytes) -> Document:
    """The event as stored: its JSON, `_id` its `event_id` (else a hash of the record's bytes)."""
    event: Document = orjson.loads(value)
    claimed = event.get("event_id")
    return {"_id": claimed if isinstance(claimed, str) else hashlib.sha256(value).hexdigest(), **event}


async def insert(collection: AsyncCollection[Document], documents: Sequence[Document]) -> None:
    """Unordered insert_many; only duplicate keys are forgiven."""
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise


async def store(
    batch: Mapping[TopicPartition, list[ConsumerRecord]], collections: Mapping[str, AsyncCollection[Document]]
) -> None:
    """Write a batch (each topic's records with one insert_many, the topics concurrently), then log it."""
    per_topic: dict[str, list[Document]] = defaultdict(list)
    for tp, records in batch.items():
        per_topic[tp.topic].extend(document(record.value) for record in records)
    await asyncio.gather(*(insert(collections[topic], docs) for topic, docs in per_topic.items()))
    for tp, records in batch.items():
        log("floor_saved", topic=tp.topic, partition=tp.partition, offset=records[0].offset,
            last_offset=records[-1].offset)  # fmt: skip


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Poll, store, commit until `stop` is set."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    database = client[settings.mongodb_database]
    await ensure_indexes(database)
    collections = {settings.topic_for(route): database[COLLECTION[route]] for route in RouteName}
    consumer = create_consumer(settings)
    consumer.subscribe(list(collections), listener=_Assigned())
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=settings.kafka_poll_timeout_ms)
            batch = {tp: records for tp, records in batch.items() if records}
            if batch:
                await store(batch, collections)
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
    finally:
        await consumer.stop()
        await client.close()


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await run(Settings(), stop)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
