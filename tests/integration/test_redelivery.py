"""The telemetry redelivery loop on real servers: many replicas, broker outages, parking, crashes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.integration.harness import RedeliverProcess, WorkerProcess, running_worker, wait_until
from tests.integration.telemetry_support import (
    as_utc,
    buffered_documents,
    read_delivered,
    redelivery_settings,
    running_loop,
)
from worker.mongo.gateway import gateway_for
from worker.settings import Settings
from worker.telemetry.assembly import buffer_for


@pytest.fixture
async def settings(unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any) -> Settings:
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)
    return settings


async def buffered(db: Any) -> int:
    """Documents still to deliver (delivered ones stay as tombstones for the dedup window)."""
    return int(await db.telemetry_buffer.count_documents({"state": None}))


async def test_three_loops_deliver_every_document_exactly_once(settings: Settings, mongo_db: Any) -> None:
    """Three loops draining 2000 buffered documents at once publish each exactly once, with retry_count 1, and empty the buffer."""
    documents = buffered_documents(2000, seed=31)
    await mongo_db.telemetry_buffer.insert_many(documents)
    stops = [asyncio.Event() for _ in range(3)]
    started = time.monotonic()
    with capture_logs() as logs:
        async with running_loop(settings, stops[0]) as a, running_loop(settings, stops[1]) as b, \
                running_loop(settings, stops[2]) as c:  # fmt: skip
            await wait_until(lambda: _is_empty(mongo_db), within=120, what="an empty buffer")
            elapsed = time.monotonic() - started
    print(f"\nthree loops drained 2000 documents in {elapsed:.1f}s: {2000 / elapsed:.0f} documents/s")
    assert all(loop.delivered > 0 for loop in (a, b, c)), "each loop must have taken part"
    assert a.delivered + b.delivered + c.delivered == 2000
    delivered = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic
    )
    copies = Counter(message.buffer_id for message in delivered)
    assert set(copies) == {document["_id"] for document in documents}
    twice = [
        (m.buffer_id, m.partition, m.offset, m.retry_count) for m in delivered if copies[m.buffer_id] > 1
    ]
    assert twice == []
    assert {message.retry_count for message in delivered} == {1}, (
        "one attempt each: retry counts add up to 2000"
    )
    batches = [line for line in logs if line["event"] == "telemetry_redelivered"]
    assert sum(line["delivered"] for line in batches) == 2000
    assert not [line for line in logs if line["event"] in ("telemetry_parked", "telemetry_lease_lost")]


async def _is_empty(db: Any) -> bool:
    return await buffered(db) == 0


async def test_a_delivered_message_is_the_telemetry_event_keyed_by_workflow(
    settings: Settings, mongo_db: Any
) -> None:
    """The message carries correlation, metrics, timestamp (ISO-8601 UTC) and source, keyed by workflow id, with retry_count and buffer_id headers."""
    [document] = buffered_documents(1, seed=32)
    await mongo_db.telemetry_buffer.insert_one(document)
    async with running_loop(settings, asyncio.Event()):
        await wait_until(lambda: _is_empty(mongo_db), within=30, what="delivery")
    [message] = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic
    )
    assert message.key == document["correlation"]["workflow_id"].encode()
    assert (message.buffer_id, message.retry_count) == (document["_id"], 1)
    assert message.event == {
        "correlation": document["correlation"],
        "metrics": document["metrics"],
        "timestamp": document["timestamp"].isoformat().replace("+00:00", "Z"),
        "source": document["source"],
    }
    assert message.event["timestamp"].endswith("Z")


async def test_one_workflows_telemetry_stays_in_order_on_one_partition(
    settings: Settings, mongo_db: Any
) -> None:
    """Documents of one workflow are published on one partition in buffered_at order."""
    documents = buffered_documents(60, seed=33)
    for index, document in enumerate(documents):
        document["correlation"]["workflow_id"] = f"wf-{index % 3}"
    await mongo_db.telemetry_buffer.insert_many(documents)
    async with running_loop(settings, asyncio.Event()):
        await wait_until(lambda: _is_empty(mongo_db), within=30, what="delivery")
    delivered = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic
    )
    order = [document["_id"] for document in documents]
    for workflow in ("wf-0", "wf-1", "wf-2"):
        mine = [message for message in delivered if message.key == workflow.encode()]
        assert len({message.partition for message in mine}) == 1
        assert [message.buffer_id for message in mine] == [
            i for i in order if i in {m.buffer_id for m in mine}
        ]


async def test_the_worker_runs_the_loop_unless_disabled(
    settings: Settings, mongo_db: Any, create_topics: Any
) -> None:
    """`run` delivers buffered telemetry with REDELIVERY_ENABLED=true and leaves it alone with false."""
    from tests.integration.harness import prepare_topics

    await prepare_topics(create_topics, settings)
    await mongo_db.telemetry_buffer.insert_many(buffered_documents(20, seed=34))
    async with running_worker(settings.model_copy(update={"redelivery_enabled": False})):
        await asyncio.sleep(3)
        assert await buffered(mongo_db) == 20
    with capture_logs() as logs:
        async with running_worker(settings.model_copy(update={"redelivery_enabled": True})):
            await wait_until(lambda: _is_empty(mongo_db), within=30, what="the worker's loop to drain")
    events = [line["event"] for line in logs]
    assert "telemetry_redelivery_started" in events
    assert events.index("worker_stopped") > max(
        i for i, e in enumerate(events) if e == "telemetry_redelivered"
    )


async def test_a_document_kafka_refuses_for_good_is_parked_at_once(settings: Settings, mongo_db: Any) -> None:
    """A document larger than Kafka accepts is parked at its first attempt with the error, and its neighbours are delivered."""
    documents = buffered_documents(5, seed=35)
    documents[2]["metrics"] = {"blob": "x" * 1_100_000}
    await mongo_db.telemetry_buffer.insert_many(documents)
    with capture_logs() as logs:
        async with running_loop(settings, asyncio.Event()):
            await wait_until(
                lambda: _only_parked_left(mongo_db), within=30, what="four delivered, one parked"
            )
    parked = await mongo_db.telemetry_buffer.find_one({"_id": documents[2]["_id"]})
    assert parked["parked"] and parked["retry_count"] == 1
    assert "MessageSizeTooLarge" in parked["last_error"]
    assert "lease_owner" not in parked
    [line] = [line for line in logs if line["event"] == "telemetry_parked"]
    assert line["buffer_id"] == documents[2]["_id"]


async def test_parked_is_stored_as_a_boolean(settings: Settings, mongo_db: Any) -> None:
    """A parked document carries `parked: true` as a BSON boolean, so `{parked: true}` queries and tools agree."""
    documents = buffered_documents(1, seed=40)
    documents[0]["metrics"] = {"blob": "x" * 1_100_000}
    await mongo_db.telemetry_buffer.insert_many(documents)
    async with running_loop(settings, asyncio.Event()):
        await wait_until(lambda: _parked_count(mongo_db, 1), within=30, what="parked")
    stored = await mongo_db.telemetry_buffer.find_one()
    assert stored["parked"] is True


async def _only_parked_left(db: Any) -> bool:
    return await buffered(db) == 1 and await db.telemetry_buffer.count_documents({"parked": True}) == 1


async def test_documents_past_the_maximum_are_parked_and_no_longer_tried(
    controllable_kafka: Any, unique_name: str, mongo_uri: str, mongo_db: Any
) -> None:
    """With Kafka down, each document is tried TELEMETRY_MAX_DELIVERY_ATTEMPTS times, then parked, logged and left alone."""
    settings = redelivery_settings(
        name=unique_name, bootstrap=controllable_kafka.bootstrap, mongo_uri=mongo_uri,
        telemetry_max_delivery_attempts=3, redelivery_lease_s=2.0, redelivery_backoff_base_s=0.1,
        redelivery_backoff_cap_s=0.2,
    )  # fmt: skip
    documents = buffered_documents(2, seed=36)
    with capture_logs() as logs:
        async with running_loop(settings, asyncio.Event()):
            controllable_kafka.stop()
            await mongo_db.telemetry_buffer.insert_many(documents)
            await wait_until(lambda: _parked_count(mongo_db, 2), within=40, what="both parked")
            controllable_kafka.start()
            await asyncio.sleep(2)  # the loop is back in business: parked documents stay put
    for stored in await mongo_db.telemetry_buffer.find().to_list():
        assert stored["parked"]
        assert stored["retry_count"] == 3, "three attempts, no fourth"
        assert stored["last_error"]
        assert as_utc(stored["parked_at"]) <= as_utc(stored["last_attempt_at"])
    parked_lines = [line for line in logs if line["event"] == "telemetry_parked"]
    assert sorted(line["buffer_id"] for line in parked_lines) == sorted(d["_id"] for d in documents)
    assert all(line["retry_count"] == 3 and line["last_error"] for line in parked_lines)
    assert [line for line in logs if line["event"] == "telemetry_redelivery_failed"]


async def _parked_count(db: Any, expected: int) -> bool:
    return await db.telemetry_buffer.count_documents({"parked": True}) == expected


async def test_a_broker_outage_keeps_documents_and_delivery_resumes(
    controllable_kafka: Any, unique_name: str, mongo_uri: str, mongo_db: Any
) -> None:
    """While Kafka is down documents stay and, after the first failed batch, retry_count rises slowly (the loop backs off and
    probes one document at a time); when it returns, all are delivered."""
    settings = redelivery_settings(name=unique_name, bootstrap=controllable_kafka.bootstrap, mongo_uri=mongo_uri,
                                   telemetry_max_delivery_attempts=50)  # fmt: skip
    documents = buffered_documents(30, seed=37)
    with capture_logs() as logs:
        async with running_loop(settings, asyncio.Event()) as loop:
            controllable_kafka.stop()
            await mongo_db.telemetry_buffer.insert_many(documents)
            await wait_until(lambda: _failed_batches(loop, 1), within=30, what="a first failed batch")
            after_first = await _attempts(mongo_db)
            await asyncio.sleep(6)
            assert await buffered(mongo_db) == 30, "nothing is lost while Kafka is down"
            probes = await _attempts(mongo_db) - after_first
            assert probes <= 4, f"{probes} attempts in 6 s after the first failed batch: the loop must back off, not spin"
            assert loop.failures >= 2
            controllable_kafka.start()
            await wait_until(lambda: _is_empty(mongo_db), within=60, what="delivery after the outage")
    delivered = await read_delivered(controllable_kafka.bootstrap, settings.kafka_telemetry_delivery_topic)
    assert {m.buffer_id for m in delivered} == {d["_id"] for d in documents}
    assert max(m.retry_count for m in delivered) > 1
    failures = [line for line in logs if line["event"] == "telemetry_redelivery_failed"]
    assert failures and all(line["retry_in_s"] <= settings.redelivery_backoff_cap_s for line in failures)


async def _failed_batches(loop: Any, at_least: int) -> bool:
    return bool(loop.failures >= at_least)


async def _attempts(db: Any) -> int:
    return sum([document["retry_count"] async for document in db.telemetry_buffer.find()])


async def _attempted(db: Any, at_least: int) -> bool:
    return await _attempts(db) >= at_least


async def test_a_lease_held_by_a_dead_replica_expires_and_another_delivers(
    settings: Settings, mongo_db: Any
) -> None:
    """Documents claimed by a replica that died stay untouched until the lease lapses, then another loop delivers them."""
    settings = settings.model_copy(update={"redelivery_lease_s": 3.0})
    documents = buffered_documents(10, seed=38)
    await mongo_db.telemetry_buffer.insert_many(documents)
    gateway = gateway_for(settings)
    await gateway.connect()
    dead = buffer_for(settings, gateway.database)
    owner = dead.new_lease_owner()
    claimed = (await dead.claim_due(owner, 3)).documents
    claimed_at = time.monotonic()
    await gateway.close()
    async with running_loop(settings, asyncio.Event()):
        await wait_until(lambda: _count_is(mongo_db, 3), within=30, what="the free documents delivered")
        assert time.monotonic() - claimed_at < settings.redelivery_lease_s - 1, (
            "delivered before the lease lapsed"
        )
        await wait_until(lambda: _is_empty(mongo_db), within=30, what="the dead replica's documents")
    assert (
        time.monotonic() - claimed_at >= settings.redelivery_lease_s - 1
    )  # -1: the stand-in compares whole seconds
    delivered = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic
    )
    retries = {m.buffer_id: m.retry_count for m in delivered}
    assert len(delivered) == 10
    assert len(claimed) == 3 and {retries[document["_id"]] for document in claimed} == {2}


async def _count_is(db: Any, expected: int) -> bool:
    return await buffered(db) == expected


async def test_a_replica_killed_mid_delivery_loses_nothing_and_duplicates_only_its_claims(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any, tmp_path: Path,
    processes: list[WorkerProcess],
) -> None:  # fmt: skip
    """`redeliver` killed with SIGKILL mid-drain: a second replica delivers every document; only the killed one's claims may come twice."""
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                                   redelivery_lease_s=3.0, redelivery_batch_size=50, http_port=0)  # fmt: skip
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)
    documents = buffered_documents(1500, seed=39)
    await mongo_db.telemetry_buffer.insert_many(documents)
    first = RedeliverProcess(settings, tmp_path / "first.log")
    processes.append(first)
    first.start()
    await wait_until(lambda: _count_at_most(mongo_db, 1200), within=60, what="the first replica under way")
    first.kill()
    held = await mongo_db.telemetry_buffer.count_documents({"lease_owner": {"$exists": True}})
    second = RedeliverProcess(settings, tmp_path / "second.log")
    processes.append(second)
    second.start()
    await wait_until(lambda: _is_empty(mongo_db), within=90, what="the second replica to finish")
    assert second.terminate() == 0
    delivered = await read_delivered(kafka_bootstrap, settings.kafka_telemetry_delivery_topic)
    copies = Counter(m.buffer_id for m in delivered)
    assert set(copies) == {d["_id"] for d in documents}, "every document delivered at least once"
    twice = [buffer_id for buffer_id, n in copies.items() if n > 1]
    assert len(twice) <= settings.redelivery_batch_size, "duplicates only from the killed replica's batch"
    assert all(n <= 2 for n in copies.values())
    second_copies = {m.buffer_id: m.retry_count for m in delivered if m.buffer_id in twice}
    assert all(count == 2 for count in second_copies.values())
    assert held <= settings.redelivery_batch_size
    parked_or_leased = await mongo_db.telemetry_buffer.count_documents({"state": None})
    assert parked_or_leased == 0
    assert "telemetry_redelivered" in second.log_text()


async def _count_at_most(db: Any, most: int) -> bool:
    return await buffered(db) <= most
