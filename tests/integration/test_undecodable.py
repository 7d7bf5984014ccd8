"""A record batch the consumer cannot decode pauses its partition; the worker and the other partitions go on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import UnsupportedCodecError
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.integration.harness import (
    committed_offsets,
    prepare_topics,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from worker.settings import RouteName, Settings

BAD_PARTITION, BAD_OFFSET, PER_PARTITION = 0, 5, 10


@pytest.fixture
def undecodable_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """From BAD_OFFSET on, partition BAD_PARTITION decodes as librdkafka's snappy would without its codec."""
    unpack = PartitionRecords._unpack_records

    def unpack_failing(self: PartitionRecords) -> Iterator[Any]:
        for record in unpack(self):
            if self._tp.partition == BAD_PARTITION and record.offset >= BAD_OFFSET:
                raise UnsupportedCodecError("Libraries for snappy compression codec not found")
            yield record

    monkeypatch.setattr(PartitionRecords, "_unpack_records", unpack_failing)


async def publish_to_partitions(settings: Settings) -> None:
    factory = EventFactory(seed=44)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in (0, 1):
            for index in range(PER_PARTITION):
                value = orjson.dumps({**factory.incident(), "event_id": f"p{partition}-{index}"})
                await producer.send(settings.topic_for(RouteName.INCIDENTS), value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def test_an_undecodable_batch_pauses_only_its_partition_at_its_offset(
    undecodable_batch: None,
    unique_name: str,
    kafka_bootstrap: str,
    mongo_uri: str,
    create_topics: Any,
    mongo_db: Any,
) -> None:
    """Records before the bad batch and every other partition are stored and committed; the worker keeps running."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings, partitions=2)
    await publish_to_partitions(settings)
    topic = settings.topic_for(RouteName.INCIDENTS)
    before = REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": topic}) or 0.0

    async def committed_up_to_the_bad_batch() -> bool:
        return await committed_offsets(settings, topic, 2) == {BAD_PARTITION: BAD_OFFSET, 1: PER_PARTITION}

    with capture_logs() as logs:
        async with running_worker(settings) as worker:
            await wait_until(
                committed_up_to_the_bad_batch, within=60, what="commits up to the undecodable batch"
            )
            assert not worker.done(), "the worker stopped"
    stored = sorted(doc["_id"] for doc in await mongo_db.incidents.find({}).to_list())
    assert stored == sorted(
        [f"p0-{i}" for i in range(BAD_OFFSET)] + [f"p1-{i}" for i in range(PER_PARTITION)]
    )
    paused = [line for line in logs if line["event"] == "partition_undecodable"]
    assert paused and {(line["partition"], line["offset"]) for line in paused} == {
        (BAD_PARTITION, BAD_OFFSET)
    }
    assert "UnsupportedCodecError" in paused[0]["error"]
    after = REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": topic})
    assert after is not None and after > before
