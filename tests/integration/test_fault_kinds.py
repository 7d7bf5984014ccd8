"""Faults between the worker and its servers, by kind: an operation MongoDB refuses (code 13 through
the fault proxy) holds a fail-closed route; a dead letter too large for the producer still goes out."""

from __future__ import annotations

from typing import Any

import orjson

from tests.integration.harness import (
    committed_offsets,
    prepare_topics,
    publish_good,
    publish_records,
    read_topic,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.faultproxy import FaultProxy
from tests.support.mongo_faults import WriteRefusal, through_proxy, upstream_of
from worker.settings import RouteName, Settings

PARTITIONS = 3


async def committed_sum(settings: Settings, topic: str) -> int:
    offsets = await committed_offsets(settings, topic, PARTITIONS)
    return sum(offset or 0 for offset in offsets.values())


async def test_an_authorization_refusal_holds_a_fail_closed_route_until_it_heals(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """Writes refused with `not authorized` (13) on a fail-closed route: nothing dead-lettered or committed; all stored once healed."""
    refusal = WriteRefusal()
    async with FaultProxy(upstream=upstream_of(mongo_uri)) as proxy:
        refusal.install(proxy)
        refusal.refusing = True
        settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=through_proxy(mongo_uri, proxy.address),
                                fail_closed_routes=frozenset({RouteName.INCIDENTS}))  # fmt: skip
        await prepare_topics(create_topics, settings, partitions=PARTITIONS)
        topic = settings.topic_for(RouteName.INCIDENTS)
        dlq = settings.dlq_topic(topic)
        async with running_worker(settings):
            await publish_good(settings, RouteName.INCIDENTS, 40, seed=31)

            async def refused_again_and_again() -> bool:
                return sum(refusal.refused.values()) >= 6

            await wait_until(refused_again_and_again, within=60, what="the writes refused several times")
            assert await committed_sum(settings, topic) == 0
            assert await read_topic(kafka_bootstrap, dlq, idle_ms=500) == []
            refusal.refusing = False

            async def all_committed() -> bool:
                return await committed_sum(settings, topic) == 40

            await wait_until(all_committed, within=60, what="every offset committed after healing")
    assert await mongo_db.incidents.count_documents({}) == 40
    assert await read_topic(kafka_bootstrap, dlq, idle_ms=500) == []


async def test_a_dead_letter_over_max_request_size_is_published_truncated_and_the_partition_moves_on(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """A 1.5 MB record (over MAX_EVENT_BYTES and the producer's limit) is dead-lettered once, truncated; all is committed."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings, partitions=1)
    topic = settings.topic_for(RouteName.TELEMETRY)
    factory = EventFactory(seed=32)
    big = orjson.dumps(factory.good(RouteName.TELEMETRY) | {"source": "x" * 1_500_000})
    records = [
        (None, orjson.dumps(factory.good(RouteName.TELEMETRY)), ()),
        (b"wf-big", big, [("event_id", b"tel-big")]),
        (None, b"{not json", ()),
        (None, orjson.dumps(factory.good(RouteName.TELEMETRY)), ()),
    ]
    await publish_records(kafka_bootstrap, topic, records)
    async with running_worker(settings):

        async def all_committed() -> bool:
            return await committed_sum(settings, topic) == len(records)

        await wait_until(all_committed, within=60, what="the partition committed past the large record")
    dead = await read_topic(kafka_bootstrap, settings.dlq_topic(topic))
    by_reason = {dict(letter.headers)["x-error-reason"]: letter for letter in dead}
    assert sorted(by_reason) == [b"not_json", b"too_large"] and len(dead) == 2
    large = by_reason[b"too_large"]
    headers = dict(large.headers)
    assert (headers["x-truncated"], headers["x-original-size"]) == (b"true", str(len(big)).encode())
    assert (headers["x-source-offset"], headers["event_id"], large.key) == (b"1", b"tel-big", b"wf-big")
    assert large.value == big[: settings.dlq_truncated_value_bytes]
    assert "x-truncated" not in dict(by_reason[b"not_json"].headers)
    assert await mongo_db.telemetry_buffer.count_documents({}) == 2
