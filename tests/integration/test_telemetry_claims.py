"""Claims on telemetry_buffer by the batch: a constant number of round trips, an index that skips tombstones,
two claimants never sharing a document, and documents buffered by an older version still claimed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.telemetry_support import buffered_documents, redelivery_settings
from tests.integration.test_query_plans import stages
from worker.mongo.gateway import MongoGateway
from worker.mongo.indexes import ensure_indexes, expected_indexes
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.assembly import buffer_for
from worker.telemetry.buffer import Attempt, TelemetryBuffer, claim_index_created, date_the_undated
from worker.telemetry.delivery import TelemetryPublisher, create_delivery_producer
from worker.telemetry.loop import RedeliveryLoop

Document = dict[str, Any]


class Commands(monitoring.CommandListener):
    """The commands a client sent to the server (handshakes and heartbeats left out)."""

    def __init__(self) -> None:
        self.sent: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"hello", "isMaster", "ismaster", "ping", "endSessions"}:
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        """The names of the commands sent since the last take."""
        names = [next(iter(command)) for command in self.sent]
        self.sent.clear()
        return names


async def watched_database(uri: str, name: str) -> tuple[AsyncMongoClient[Document], Commands]:
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[commands])
    await client[name].command("ping")
    commands.take()
    return client, commands


def tombstones(count: int) -> list[Document]:
    now = datetime.now(UTC)
    return [{"_id": f"gone-{n}", "state": "delivered", "delivered_at": now} for n in range(count)]


@pytest.fixture
async def watched(mongo_uri: str, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[tuple[AsyncDatabase[Document], Commands]]:
    """The test's database through a client that records every command it sends."""
    client, commands = await watched_database(mongo_uri, mongo_db.name)
    yield client[mongo_db.name], commands
    await client.close()


async def test_an_uncontended_claim_takes_a_whole_batch_in_two_round_trips_and_settles_it_in_one(
    watched: tuple[AsyncDatabase[Document], Commands],
) -> None:
    """Claiming 100 of 250 due documents beside 300 tombstones is a read and one bulk write; settling them is one write."""
    db, commands = watched
    await db.telemetry_buffer.insert_many(tombstones(300) + buffered_documents(250, seed=60))
    buffer = buffer_for(Settings(), lambda: db)
    owner = buffer.new_lease_owner()
    commands.take()

    claim = await buffer.claim_due(owner, 100)
    assert commands.take() == ["find", "update"]
    assert len(claim.documents) == 100 and not claim.more
    assert all(doc["lease_owner"] == owner and doc["retry_count"] == 1 for doc in claim.documents)

    settled = await buffer.settle(owner, [Attempt(doc) for doc in claim.documents])
    assert commands.take() == ["update"] and settled.removed == 100


@pytest.mark.parametrize("size", [10, 100])
async def test_a_batch_of_the_loop_costs_three_mongodb_commands_whatever_its_size(
    size: int, unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: AsyncDatabase[Document]
) -> None:
    """One batch of the redelivery loop (claim, send, settle) sends MongoDB three commands, for 10 documents as for 100."""
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)
    await mongo_db.telemetry_buffer.insert_many(tombstones(200) + buffered_documents(size, seed=67))
    client, commands = await watched_database(mongo_uri, mongo_db.name)
    gateway = MongoGateway(client=client, database_name=mongo_db.name)
    await gateway.connect()
    producer = create_delivery_producer(settings)
    await producer.start()
    try:
        loop = RedeliveryLoop(buffer=buffer_for(settings, gateway.database),
                              publisher=TelemetryPublisher(producer=producer, topic=settings.kafka_telemetry_delivery_topic),
                              stop=asyncio.Event(), batch_size=size, idle_poll_s=1.0,
                              retry_policy=RetryPolicy.for_redelivery(settings))  # fmt: skip
        commands.take()
        report = await loop.deliver_batch(size)
    finally:
        await producer.stop()
        await gateway.close()
    assert report.settled is not None and report.settled.removed == size
    assert commands.take() == ["find", "update", "update"]


async def test_claims_take_the_earliest_due_first_and_never_the_same_document_twice(mongo_db: AsyncDatabase[Document]) -> None:
    """Successive claims take the documents in buffered order, each once, until none is due; then a claim is empty."""
    documents = buffered_documents(45, seed=61)
    await mongo_db.telemetry_buffer.insert_many(documents)
    buffer = buffer_for(Settings(), lambda: mongo_db)
    taken = []
    for _ in range(5):
        taken += [doc["_id"] for doc in (await buffer.claim_due(buffer.new_lease_owner(), 10)).documents]
    assert taken == [doc["_id"] for doc in documents]
    assert (await buffer.claim_due(buffer.new_lease_owner(), 10)).documents == []


async def test_two_claimants_reading_the_same_documents_split_them(mongo_db: AsyncDatabase[Document]) -> None:
    """Claimants racing for the same due documents each win a disjoint share, and together all of them."""
    documents = buffered_documents(60, seed=62)
    await mongo_db.telemetry_buffer.insert_many(documents)
    buffers = [buffer_for(Settings(), lambda: mongo_db) for _ in range(3)]
    claims = await asyncio.gather(*(b.claim_due(b.new_lease_owner(), 60) for b in buffers))
    won = [[doc["_id"] for doc in claim.documents] for claim in claims]
    everything = [document_id for share in won for document_id in share]
    assert len(everything) == len(set(everything)), "a document claimed by two claimants"
    leftover = await buffers[0].claim_due(buffers[0].new_lease_owner(), 60)
    assert set(everything) | {doc["_id"] for doc in leftover.documents} == {doc["_id"] for doc in documents}


async def test_a_lapsed_lease_makes_the_document_due_again_and_a_live_one_does_not(mongo_db: AsyncDatabase[Document]) -> None:
    """A claim moves `due_at` to the lease's end: nobody else claims the document before it, anybody after it."""
    await mongo_db.telemetry_buffer.insert_many(buffered_documents(3, seed=63))
    backoff = RetryPolicy.for_redelivery(Settings())
    buffer = TelemetryBuffer(database=lambda: mongo_db, lease_s=1.0, retry_policy=backoff, dedup_window_s=60)
    first = await buffer.claim_due(buffer.new_lease_owner(), 3)
    assert len(first.documents) == 3
    assert (await buffer.claim_due(buffer.new_lease_owner(), 3)).documents == []
    await asyncio.sleep(1.2)
    again = await buffer.claim_due(buffer.new_lease_owner(), 3)
    assert [doc["retry_count"] for doc in again.documents] == [2, 2, 2]


async def test_the_claim_reads_only_pending_documents_whatever_the_tombstones(mongod_like_uri: str) -> None:
    """On a server with mongod's planner, the claim's read is an index scan of `due_at` in order (no sort stage) that examines
    the pending documents only: 3,000 tombstones and 40 parked documents cost it nothing."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    client, commands = await watched_database(mongod_like_uri, name)
    try:
        db = client[name]
        parked = [{**doc, "parked": True} for doc in buffered_documents(40, seed=64)]
        for doc in parked:
            del doc["due_at"]
        await db.telemetry_buffer.insert_many(tombstones(3_000) + parked + buffered_documents(60, seed=65))
        await ensure_indexes(db, expected_indexes(Settings()))
        buffer = buffer_for(Settings(), lambda: db)
        commands.take()
        await buffer.claim_due(buffer.new_lease_owner(), 100)
        read = commands.sent[0]
        command = {key: read[key] for key in ("find", "filter", "sort", "limit") if key in read}
        answer = await db.command("explain", command, verbosity="executionStats")
        plan = answer["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in stages(plan) and "COLLSCAN" not in stages(plan), stages(plan)
        assert "SORT" not in stages(plan), "the index order serves the sort"
        examined = answer["executionStats"]
        assert examined["totalKeysExamined"] <= 61 and examined["totalDocsExamined"] <= 61, examined
    finally:
        await client.drop_database(name)
        await client.close()


async def test_documents_buffered_before_due_at_are_dated_when_the_claim_index_is_created(
    mongo_db: AsyncDatabase[Document],
) -> None:
    """Pending documents without `due_at` (an older version's) become due at once, or after the lease an old claimant holds;
    parked documents and tombstones stay undated, and it happens only when the claim index is first created."""
    free, held, parked = buffered_documents(3, seed=66)
    for doc in (free, held, parked):
        del doc["due_at"]
    held["lease_owner"] = "old-replica:1/abc"
    parked["parked"] = True
    await mongo_db.telemetry_buffer.insert_many([free, held, parked, *tombstones(2)])
    reports = await ensure_indexes(mongo_db, expected_indexes(Settings()))
    assert claim_index_created(reports)
    assert await date_the_undated(mongo_db, lease_s=60) == 2
    assert not claim_index_created(await ensure_indexes(mongo_db, expected_indexes(Settings())))

    buffer = buffer_for(Settings(), lambda: mongo_db)
    claimed = (await buffer.claim_due(buffer.new_lease_owner(), 10)).documents
    assert [doc["_id"] for doc in claimed] == [free["_id"]]
    undated = await mongo_db.telemetry_buffer.count_documents({"due_at": {"$exists": False}})
    assert undated == 3, "the parked document and the two tombstones"
    later = datetime.now(UTC) + timedelta(seconds=30)
    stored = await mongo_db.telemetry_buffer.find_one({"_id": held["_id"]})
    assert stored is not None and _as_utc(stored["due_at"]) > later


def _as_utc(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
