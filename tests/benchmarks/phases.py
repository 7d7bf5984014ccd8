"""The measured phases. Each returns what it handled: events, wall seconds and this process's CPU
seconds over the measured part alone (/proc/self/stat; setup and clean-up excluded).

1. consume ceiling: aiokafka alone, no validation, no writes;
2. write ceiling: the same documents, bulk-inserted (unordered insert_many) into MongoDB alone;
   also the worker's own write path (its writers: upserts for results) as an explanation;
3. naive baseline: validate each record, insert_one it, commit per record.
The worker itself runs as a process: see tests.benchmarks.worker_run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from tests.benchmarks.backlog import Backlog, events
from tests.benchmarks.measure import Spent, cpu_seconds
from worker.kafka.clients import connection_options
from worker.mongo.gateway import MongoGateway
from worker.mongo.indexes import ensure_indexes
from worker.pipeline.assembly import routes_for
from worker.pipeline.decode import decode_json_object, validate_event
from worker.pipeline.prepare import Rejected, prepare
from worker.pipeline.routes import Route
from worker.settings import Settings

Document = dict[str, Any]


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The worker's own consumer options (fetch sizes, batch size), without the group."""
    return {
        **connection_options(settings),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.kafka_max_batch_records,
    }


async def consume_ceiling(backlog: Backlog) -> Spent:
    """Drain every partition from the start with aiokafka alone (assigned, no group)."""
    consumer = AIOKafkaConsumer(**consumer_options(backlog.settings))
    await consumer.start()
    try:
        consumer.assign(list(backlog.ends))
        await consumer.seek_to_beginning(*backlog.ends)
        remaining = dict(backlog.ends)
        count = 0
        cpu_before, started = cpu_seconds(), time.perf_counter()
        while remaining:
            batch = await consumer.getmany(
                timeout_ms=1000, max_records=backlog.settings.kafka_max_batch_records
            )
            for tp, records in batch.items():
                count += len(records)
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    finally:
        await consumer.stop()
    if count != backlog.count:
        raise RuntimeError(f"consume ceiling read {count} records, expected {backlog.count}")
    return Spent(count, elapsed, cpu)


def prepare_cost(backlog: Backlog, routes: Mapping[str, Route]) -> Spent:
    """Decode + validate + build the document (the worker's `prepare`), on one core, no I/O."""
    values = [(routes[backlog.settings.topic_for(e.route)], e.value) for e in events(backlog.count)]
    settings = backlog.settings
    cpu_before, started = cpu_seconds(), time.perf_counter()
    for route, raw in values:
        outcome = prepare(
            route, raw, (), max_bytes=settings.max_event_bytes, max_depth=settings.max_nesting_depth
        )
        if isinstance(outcome, Rejected):
            raise RuntimeError(f"a benchmark event was refused: {outcome.reason} {outcome.detail}")
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return Spent(len(values), elapsed, cpu)


def contract_cost(backlog: Backlog, routes: Mapping[str, Route]) -> Spent:
    """The libraries the contract needs, and nothing of the worker's: orjson parses each value and
    the route's pydantic model validates it, on one core, no I/O."""
    values = [(routes[backlog.settings.topic_for(e.route)].model, e.value) for e in events(backlog.count)]
    cpu_before, started = cpu_seconds(), time.perf_counter()
    for model, raw in values:
        model.model_validate(orjson.loads(raw))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return Spent(len(values), elapsed, cpu)


def prepared_documents(backlog: Backlog, routes: Mapping[str, Route]) -> list[tuple[Route, Document]]:
    """The documents the worker would write for the backlog, in publishing order."""
    settings = backlog.settings
    prepared = []
    for event in events(backlog.count):
        route = routes[settings.topic_for(event.route)]
        value = decode_json_object(
            event.value, max_bytes=settings.max_event_bytes, max_depth=settings.max_nesting_depth
        )
        prepared.append((route, dict(route.to_document(validate_event(route.model, value)))))
    return prepared


async def write_ceiling(
    settings: Settings, database: str, prepared: Sequence[tuple[Route, Document]], *, worker_ops: bool
) -> Spent:
    """Bulk-write `prepared` in batches of the worker's size, the routes of a batch concurrently.

    `worker_ops=False`: unordered insert_many for every collection (the ceiling);
    `worker_ops=True`: the worker's writers (results as guarded upserts).
    The CPU is the client side alone (BSON encoding, the driver's sends and replies): the server is
    another process.
    """
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    gateway = MongoGateway(client=client, database_name=database)
    try:
        db = await gateway.connect()
        await ensure_indexes(db)
        routes = routes_for(settings, gateway)
        size = settings.kafka_max_batch_records
        cpu_before, started = cpu_seconds(), time.perf_counter()
        for start in range(0, len(prepared), size):
            per_route: dict[str, list[Document]] = defaultdict(list)
            for route, document in prepared[start : start + size]:
                per_route[route.topic].append(document)
            writes: list[Awaitable[object]] = []
            for topic, documents in per_route.items():
                writer = routes[topic].writer
                if worker_ops:
                    writes.append(writer.write(documents))
                else:
                    writes.append(db[writer.collection].insert_many(documents, ordered=False))
            await asyncio.gather(*writes)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        await client.drop_database(database)
    finally:
        await client.close()
    return Spent(len(prepared), elapsed, cpu)


async def naive_baseline(backlog: Backlog, database: str, group: str, limit: int) -> float:
    """One record at a time: decode, validate, insert_one, commit. Timed from the first record."""
    settings = backlog.settings
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    gateway = MongoGateway(client=client, database_name=database)
    db = await gateway.connect()
    routes = routes_for(settings, gateway)
    consumer = AIOKafkaConsumer(*backlog.topics, **consumer_options(settings), group_id=group)
    await consumer.start()
    count = 0
    started = 0.0
    try:
        while count < limit:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1)
            for tp, records in batch.items():
                for record in records:
                    if count == 0:
                        started = time.perf_counter()
                    route = routes[record.topic]
                    value = decode_json_object(
                        record.value, max_bytes=settings.max_event_bytes, max_depth=settings.max_nesting_depth
                    )
                    document = route.to_document(validate_event(route.model, value))
                    with contextlib.suppress(DuplicateKeyError):
                        await db[route.writer.collection].insert_one(dict(document))
                    await consumer.commit({TopicPartition(tp.topic, tp.partition): record.offset + 1})
                    count += 1
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await client.drop_database(database)
        await client.close()
    return count / elapsed
