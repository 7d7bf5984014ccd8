"""The worker reads read_committed: records of an aborted transaction are never stored."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.integration import librdkafka
from tests.integration.harness import prepare_topics, running_worker, settings_for, wait_until
from tests.support.events import EventFactory
from worker.settings import RouteName


@pytest.mark.standin_deviation(
    server="tansu",
    raises=AssertionError,
    reason="tansu hands the records of aborted transactions to read_committed consumers too",
)
async def test_records_of_an_aborted_transaction_are_not_stored(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """An incident sent (by librdkafka) in an aborted transaction is skipped; one sent in a committed transaction after it is stored."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings, partitions=1)
    topic = settings.topic_for(RouteName.INCIDENTS)
    factory = EventFactory(seed=43)
    aborted = orjson.dumps({**factory.incident(), "event_id": "aborted"})
    committed = orjson.dumps({**factory.incident(), "event_id": "committed"})
    tx_id = f"{unique_name}-tx"
    await asyncio.to_thread(
        librdkafka.publish_in_transaction, kafka_bootstrap, topic, [aborted], commit=False, tx_id=tx_id
    )
    await asyncio.to_thread(
        librdkafka.publish_in_transaction, kafka_bootstrap, topic, [committed], commit=True, tx_id=tx_id
    )

    async def committed_stored() -> bool:
        return await mongo_db.incidents.find_one({"_id": "committed"}) is not None

    async with running_worker(settings):
        await wait_until(committed_stored, within=60, what="the committed incident")
    assert await mongo_db.incidents.find_one({"_id": "aborted"}) is None
