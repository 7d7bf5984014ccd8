"""Records published by another client library (librdkafka) with every Kafka codec are stored."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.integration import librdkafka
from tests.integration.harness import prepare_topics, running_worker, settings_for, wait_until
from tests.support.events import EventFactory
from worker.settings import RouteName

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
async def test_records_compressed_by_librdkafka_with_each_codec_are_stored(
    codec: str, unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """A batch compressed by librdkafka with gzip, snappy, lz4 or zstd is decoded and every event stored."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings, partitions=1)
    factory = EventFactory(seed=41)
    values = [orjson.dumps({**factory.incident(), "event_id": f"{codec}-{i}"}) for i in range(20)]
    topic = settings.topic_for(RouteName.INCIDENTS)
    await asyncio.to_thread(librdkafka.publish, kafka_bootstrap, topic, values, codec=codec)

    async def all_stored() -> bool:
        return await mongo_db.incidents.count_documents({}) == len(values)

    async with running_worker(settings) as worker:
        await wait_until(all_stored, within=60, what=f"20 {codec} records in incidents")
        assert not worker.done(), "the worker stopped"
    ids = sorted(doc["_id"] for doc in await mongo_db.incidents.find({}).to_list())
    assert ids == sorted(f"{codec}-{i}" for i in range(20))
