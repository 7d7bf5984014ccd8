"""Telemetry read again within TELEMETRY_DEDUP_WINDOW_S (a crash before the commit, dlq replay) is not delivered twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.integration.harness import prepare_topics, publish, running_worker, wait_until
from tests.integration.telemetry_support import buffered_documents, read_delivered, redelivery_settings
from tests.support.events import EventFactory
from worker.settings import RouteName, Settings
from worker.telemetry.assembly import buffer_for
from worker.telemetry.buffer import Attempt


async def delivered_ids(settings: Settings) -> Counter[str]:
    found = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic, idle_ms=500
    )
    return Counter(message.buffer_id for message in found)


async def test_a_delivered_telemetry_record_published_again_is_not_delivered_again(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """Buffered, delivered, then the same record read again: its tombstone refuses it, and only the next event goes out."""
    settings = redelivery_settings(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, redelivery_enabled=True
    )
    await prepare_topics(create_topics, settings, partitions=1)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=1)
    factory = EventFactory(seed=45)
    first = orjson.dumps({**factory.telemetry(), "event_id": "tel-first"})
    later = orjson.dumps({**factory.telemetry(), "event_id": "tel-later"})
    topic = settings.topic_for(RouteName.TELEMETRY)

    async with running_worker(settings):
        await publish(kafka_bootstrap, topic, [first])

        async def first_delivered() -> bool:
            return (await delivered_ids(settings))["tel-first"] == 1

        await wait_until(first_delivered, within=60, what="the first delivery")
        # The same record again (as after a crash before the commit), then another event behind it
        # on the same partition: once `later` is delivered, a buffered duplicate would have been too.
        await publish(kafka_bootstrap, topic, [first, later])

        async def later_delivered() -> bool:
            return (await delivered_ids(settings))["tel-later"] == 1

        await wait_until(later_delivered, within=60, what="the later event's delivery")

    assert await delivered_ids(settings) == Counter({"tel-first": 1, "tel-later": 1})
    tombstone = await mongo_db.telemetry_buffer.find_one({"_id": "tel-first"})
    assert tombstone["state"] == "delivered" and tombstone["delivered_at"] is not None


async def test_without_a_window_the_delivered_document_is_deleted(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """TELEMETRY_DEDUP_WINDOW_S=0 keeps no tombstone: the delivered document is deleted as before."""
    settings = redelivery_settings(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        mongo_uri=mongo_uri,
        redelivery_enabled=True,
        telemetry_dedup_window_s=0,
    )
    await prepare_topics(create_topics, settings, partitions=1)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=1)
    event = orjson.dumps({**EventFactory(seed=46).telemetry(), "event_id": "tel-only"})

    async with running_worker(settings):
        await publish(kafka_bootstrap, settings.topic_for(RouteName.TELEMETRY), [event])

        async def delivered_and_gone() -> bool:
            delivered = (await delivered_ids(settings))["tel-only"] == 1
            return delivered and await mongo_db.telemetry_buffer.count_documents({}) == 0

        await wait_until(delivered_and_gone, within=60, what="delivery and deletion")


async def test_tombstones_are_never_claimed_and_are_purged_after_the_window(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, mongo_db: Any
) -> None:
    """A tombstone is not claimed for delivery; purging deletes those older than the window and keeps the rest."""
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                                   telemetry_dedup_window_s=3600)  # fmt: skip
    now = datetime.now(UTC)
    old, recent, pending = buffered_documents(3, seed=47)
    old_tombstone = {"_id": old["_id"], "state": "delivered", "delivered_at": now - timedelta(hours=2)}
    recent_tombstone = {"_id": recent["_id"], "state": "delivered", "delivered_at": now - timedelta(minutes=5)}
    await mongo_db.telemetry_buffer.insert_many([old_tombstone, recent_tombstone, pending])
    buffer = buffer_for(settings, lambda: mongo_db)

    claim = await buffer.claim_due(buffer.new_lease_owner(), 3)
    assert [doc["_id"] for doc in claim.documents] == [pending["_id"]]

    assert await buffer.purge_tombstones() == 1
    left = {doc["_id"] async for doc in mongo_db.telemetry_buffer.find({}, {"_id": 1})}
    assert left == {recent["_id"], pending["_id"]}


@pytest.mark.both_mongo
async def test_a_tombstone_written_by_settling_keeps_only_what_dedup_needs_and_is_purged_past_the_window(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, mongo_db: Any
) -> None:
    """Settling a delivery leaves `_id`, `state` and a real date `delivered_at`: a purge keeps it inside the window, deletes it after."""
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                                   telemetry_dedup_window_s=3600)  # fmt: skip
    [document] = buffered_documents(1, seed=48)
    await mongo_db.telemetry_buffer.insert_one(document)
    buffer = buffer_for(settings, lambda: mongo_db)
    owner = buffer.new_lease_owner()
    [claimed] = (await buffer.claim_due(owner, 1)).documents
    assert (await buffer.settle(owner, [Attempt(claimed)])).removed == 1

    tombstone = await mongo_db.telemetry_buffer.find_one({"_id": document["_id"]})
    assert set(tombstone) == {"_id", "state", "delivered_at"} and isinstance(tombstone["delivered_at"], datetime)
    assert await buffer.purge_tombstones() == 0
    past_window = settings.model_copy(update={"telemetry_dedup_window_s": 0.001})
    await asyncio.sleep(1.1)  # nx-27017 compares dates to the whole second
    assert await buffer_for(past_window, lambda: mongo_db).purge_tombstones() == 1
    assert await mongo_db.telemetry_buffer.count_documents({}) == 0
