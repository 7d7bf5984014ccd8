"""The server fixtures give real Kafka-protocol and MongoDB-protocol servers."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from worker.mongo.gateway import MongoGateway
from worker.mongo.writers import LatestWinsWriter

Document = dict[str, Any]


async def test_kafka_round_trip_keeps_headers_and_commits_offsets(
    kafka_bootstrap: str, create_topics: Any, unique_name: str
) -> None:
    """A record produced with headers is consumed intact and its manual commit is stored."""
    topic, group = f"{unique_name}.events", f"{unique_name}.group"
    await create_topics(topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"payload", key=b"run-1", headers=[("kind", b"x")])
    finally:
        await producer.stop()

    consumer = _consumer(kafka_bootstrap, group, topic)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=20)
        tp = TopicPartition(topic, record.partition)
        await consumer.commit({tp: record.offset + 1})
    finally:
        await consumer.stop()

    assert (record.key, record.value, list(record.headers)) == (
        b"run-1",
        b"payload",
        [("kind", b"x")],
    )
    assert await _committed(kafka_bootstrap, group, tp) == record.offset + 1


def _consumer(bootstrap: str, group: str, *topics: str) -> AIOKafkaConsumer:
    # tansu holds a new group's first join for half the session timeout; 6 s is the
    # smallest session timeout a real broker accepts by default.
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """Read a group's committed offset with a fresh consumer that joins no group."""
    reader = _consumer(bootstrap, group)
    await reader.start()
    try:
        return await reader.committed(tp)
    finally:
        await reader.stop()


async def test_mongo_finds_an_inserted_document(mongo_db: AsyncDatabase[Document]) -> None:
    """A document inserted into the per-test database is found again by a query."""
    await mongo_db.runs.insert_one({"_id": "run-1", "status": "running"})

    assert await mongo_db.runs.find_one({"status": "running"}) == {
        "_id": "run-1",
        "status": "running",
    }


async def test_mongo_unique_index_refuses_a_duplicate(mongo_db: AsyncDatabase[Document]) -> None:
    """A second document with the same unique key raises DuplicateKeyError with code 11000."""
    await mongo_db.steps.create_index([("run_id", 1), ("seq", 1)], unique=True)
    await mongo_db.steps.insert_one({"run_id": "r", "seq": 1})

    with pytest.raises(DuplicateKeyError) as raised:
        await mongo_db.steps.insert_one({"run_id": "r", "seq": 1})

    assert raised.value.code == 11000


@pytest.mark.both_mongo
async def test_controllable_mongo_keeps_data_across_an_outage(
    controllable_mongo: Any, unique_name: str
) -> None:
    """While the server is stopped PyMongo raises; once started, earlier writes are there."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        controllable_mongo.uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    runs = client[unique_name].runs
    try:
        await runs.insert_one({"_id": "before-outage"})
        controllable_mongo.stop()
        with pytest.raises(PyMongoError):
            await runs.find_one({"_id": "before-outage"})
        controllable_mongo.start()

        assert await runs.find_one({"_id": "before-outage"}) == {"_id": "before-outage"}
    finally:
        await client.close()


@pytest.mark.standin_deviation(
    server="tansu",
    raises=AssertionError,
    reason="tansu overshoots max_partition_fetch_bytes: asked for 64 KiB per partition it answered about "
    "280 KB, and asked for 1 MiB a whole 5 MB partition, so a consumer's prefetch (and the worker's RSS) "
    "grows with the backlog until its answers reach about 5 MB per partition",
)
async def test_a_fetch_brings_at_most_the_partition_limit_plus_one_batch(
    kafka_bootstrap: str, create_topics: Any, unique_name: str
) -> None:
    """The worker's memory bound rests on this: each partition's prefetch is capped by
    `max_partition_fetch_bytes` (Kafka exceeds it only to return one whole record batch).
    aiokafka keeps one fetched result per partition until it is handed out, so what a
    poll can return at once is at most the limit plus one batch per partition."""
    topic, partitions, value_bytes, batch_bytes, limit = f"{unique_name}.fetch", 4, 1000, 16 * 1024, 64 * 1024
    await create_topics(topic, partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5, max_batch_size=batch_bytes)
    await producer.start()
    try:
        for index in range(4000):  # 1,000 records (about 1 MB) per partition
            await producer.send(topic, b"x" * value_bytes, partition=index % partitions)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = _reader(
        topic, kafka_bootstrap, unique_name, max_partition_fetch_bytes=limit, fetch_max_bytes=partitions * limit
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=20_000, max_records=1)
        await asyncio.sleep(2)  # let the prefetch fill every partition
        buffered = await consumer.getmany(timeout_ms=1000, max_records=1_000_000)
    finally:
        await consumer.stop()

    per_record = value_bytes + 70  # the value plus a record's framing, generously
    largest = max(len(records) for records in buffered.values())
    assert largest * per_record <= limit + batch_bytes, f"one partition brought {largest} records"


async def _latest_wins_writer(mongo_client: AsyncMongoClient[Document], name: str) -> LatestWinsWriter:
    gateway = MongoGateway(client=mongo_client, database_name=name)
    await gateway.connect()
    return LatestWinsWriter(gateway=gateway, collection="workflow_results", version_field="consolidated_at")


def _result(status: str, hour: int) -> Document:
    return {"_id": "wf-1", "workflow_id": "wf-1", "status": status,
            "consolidated_at": datetime(2026, 11, 25, hour, tzinfo=UTC)}  # fmt: skip


async def test_newer_workflow_result_replaces_the_stored_older_one(
    mongo_client: AsyncMongoClient[Document], mongo_db: AsyncDatabase[Document]
) -> None:
    """The guarded upsert matches a stored result with an older consolidated_at and replaces its fields."""
    writer = await _latest_wins_writer(mongo_client, mongo_db.name)
    await writer.write([_result("RUNNING", 11)])

    outcome = await writer.write([_result("COMPLETED", 12)])

    assert (outcome.stored, outcome.skipped, dict(outcome.refused)) == (1, frozenset(), {})
    stored = await mongo_db.workflow_results.find_one({"_id": "wf-1"})
    assert stored is not None
    assert stored["status"] == "COMPLETED"
    assert await mongo_db.workflow_results.count_documents({}) == 1


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(
    server="nx-27017",
    raises=AssertionError,
    reason="nx-27017 stores a datetime given by $set in an upsert-update as the text '2026-11-25 12:00:00'",
)
async def test_newer_workflow_result_keeps_its_version_a_date(
    mongo_client: AsyncMongoClient[Document], mongo_db: AsyncDatabase[Document]
) -> None:
    """After the guarded upsert replaces a result, consolidated_at is still a date (the next guard compares dates)."""
    writer = await _latest_wins_writer(mongo_client, mongo_db.name)
    await writer.write([_result("RUNNING", 11)])
    await writer.write([_result("COMPLETED", 12)])

    assert await mongo_db.workflow_results.find_one({"_id": "wf-1"}) == _result("COMPLETED", 12)


async def test_older_workflow_result_leaves_the_stored_newer_one(
    mongo_client: AsyncMongoClient[Document], mongo_db: AsyncDatabase[Document]
) -> None:
    """The guarded upsert does not match a newer stored result; its insert collides (11000) and is skipped."""
    writer = await _latest_wins_writer(mongo_client, mongo_db.name)
    await writer.write([_result("COMPLETED", 12)])

    outcome = await writer.write([_result("FAILED", 11)])

    assert (outcome.stored, outcome.skipped, dict(outcome.refused)) == (0, frozenset({0}), {})
    assert await mongo_db.workflow_results.find_one({"_id": "wf-1"}) == _result("COMPLETED", 12)


async def test_an_identical_workflow_result_again_is_a_duplicate_skipped(
    mongo_client: AsyncMongoClient[Document], mongo_db: AsyncDatabase[Document]
) -> None:
    """A result written again unchanged (a redelivery) is skipped, as a duplicate is on every route, and left as it is."""
    writer = await _latest_wins_writer(mongo_client, mongo_db.name)
    first = await writer.write([_result("COMPLETED", 12)])

    again = await writer.write(
        [_result("COMPLETED", 12), {**_result("FAILED", 12), "_id": "wf-2", "workflow_id": "wf-2"}]
    )

    assert (first.stored, first.skipped) == (1, frozenset())
    assert (again.stored, again.skipped, dict(again.refused)) == (1, frozenset({0}), {})
    assert await mongo_db.workflow_results.find_one({"_id": "wf-1"}) == _result("COMPLETED", 12)


async def test_a_waiting_fetch_returns_as_soon_as_a_record_arrives(
    kafka_bootstrap: str, create_topics: Any, unique_name: str
) -> None:
    """Kafka answers a fetch once `fetch_min_bytes` (1) are there, waiting up to
    `fetch_max_wait_ms` only while its partitions have nothing new. The wait still delays
    records of partitions left out of the fetch in flight (aiokafka sends one fetch per broker
    at a time, without the partitions whose records wait to be handed out): that is what
    KAFKA_FETCH_MAX_WAIT_MS trades, not a floor under every record's latency."""
    topic, max_wait_ms = f"{unique_name}.wake", 3000
    await create_topics(topic, partitions=1)
    consumer = _reader(topic, kafka_bootstrap, unique_name, fetch_max_wait_ms=max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        await consumer.getmany(timeout_ms=1000)  # joined; an empty fetch is now waiting
        await asyncio.sleep(0.2)
        sent_at = asyncio.get_running_loop().time()
        await producer.send_and_wait(topic, b"wake up")
        records = await consumer.getmany(timeout_ms=2 * max_wait_ms)
        waited_s = asyncio.get_running_loop().time() - sent_at
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
    assert sum(map(len, records.values())) == 1
    assert waited_s < max_wait_ms / 1000 / 2, f"the record reached the consumer {waited_s:.2f} s after it was sent"


def _reader(topic: str, bootstrap: str, name: str, **options: Any) -> AIOKafkaConsumer:
    """A group consumer of `topic` from its start, committing nothing, with aiokafka `options`."""
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"{name}.group", enable_auto_commit=False,
        auto_offset_reset="earliest", **options,
    )  # fmt: skip
