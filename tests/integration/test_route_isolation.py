"""Routes apart on real servers: a route held up never holds back another's records, and
under a backlog on every route they drain in ROUTE_PRIORITY's order.

Counts use estimated_document_count: the stand-in's count_documents scans (seconds on 30,000).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    prepare_topics,
    publish,
    publish_good,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.faultproxy import FaultProxy
from tests.support.mongo_faults import WriteRefusal, through_proxy, upstream_of
from tests.support.routes import COLLECTION
from worker.settings import RouteName, Settings

EXCEEDED_TIME_LIMIT = {"ok": 0.0, "code": 262, "codeName": "ExceededTimeLimit", "errmsg": "operation timed out"}
"""A transient refusal (the worker retries it after its backoff) that leaves the server's state alone."""


async def test_an_incident_is_stored_while_a_telemetry_write_waits_out_its_retry_backoff(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """telemetry_buffer refuses writes (a transient error) and the telemetry route waits 5 s
    before its retry; an incident published meanwhile is stored before that retry, because
    it never queues behind another route's batch."""
    refusal = WriteRefusal(collections=frozenset({"telemetry_buffer"}), error=EXCEEDED_TIME_LIMIT)
    async with FaultProxy(upstream=upstream_of(mongo_uri)) as proxy:
        refusal.install(proxy)
        refusal.refusing = True
        settings = settings_for(
            name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=through_proxy(mongo_uri, proxy.address),
            retry_max_attempts=2, retry_backoff_coefficient=5, retry_initial_interval_ms=5000,
            retry_max_interval_ms=5000,
        )  # fmt: skip
        await prepare_topics(create_topics, settings)
        await publish_good(settings, RouteName.TELEMETRY, 50, seed=1)
        async with running_worker(settings):

            async def telemetry_refused() -> bool:
                return refusal.refused["insert"] > 0

            await wait_until(telemetry_refused, within=90, what="the first telemetry write to be refused")
            await publish_good(settings, RouteName.INCIDENTS, 1, seed=2)

            async def incident_stored() -> bool:
                return await mongo_db.incidents.estimated_document_count() == 1

            await wait_until(incident_stored, within=30, what="the incident to be stored")
            telemetry_attempts_when_stored = refusal.refused["insert"]
            refusal.refusing = False

            async def telemetry_stored() -> bool:
                return await mongo_db.telemetry_buffer.estimated_document_count() == 50

            await wait_until(telemetry_stored, within=60, what="the telemetry to be stored after its retry")
    assert telemetry_attempts_when_stored == 1, "the incident waited for the telemetry route's retry"


PER_ROUTE = 4_000


def with_own_ids(event: dict[str, Any], ident: str) -> dict[str, Any]:
    """`event` with `ident` as its event id, and as its workflow id if it has one (results are
    stored by workflow id: two factories may give the same one)."""
    return event | {field: ident for field in ("event_id", "workflow_id") if field in event}


async def publish_warm_up(settings: Settings) -> None:
    """One event per route, its ids its own (`warm-up-<route>`), to see every route's member consume."""
    factory = EventFactory(seed=19)
    for route in RouteName:
        event = with_own_ids(factory.good(route), f"warm-up-{route.value}")
        await publish(settings.kafka_bootstrap_servers, settings.topic_for(route), [orjson.dumps(event)])


async def publish_interleaved(settings: Settings, count: int, *, first: tuple[RouteName, ...]) -> None:
    """`count` valid events per route, 100 of each route in turn (`first` first), so that every
    route's backlog grows at once; event (and workflow) ids `backlog-<route>-<i>`."""
    factories = {route: EventFactory(seed=20 + n) for n, route in enumerate(first)}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        for start in range(0, count, 100):
            for route in first:
                for i in range(start, min(start + 100, count)):
                    event = with_own_ids(factories[route].good(route), f"backlog-{route.value}-{i}")
                    await producer.send(settings.topic_for(route), orjson.dumps(event))
        await producer.flush()
    finally:
        await producer.stop()


async def test_under_a_backlog_on_every_route_they_drain_in_route_priority_order(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """With 4,000 events waiting on each route and the default settings, each route drains
    before the next in ROUTE_PRIORITY: while a route with a backlog is writing, the routes
    after it wait for a write slot even when one is free (ROUTE_PRIORITY_HOLD_MS), so they
    write only in its gaps (between its batches) or once a hold has lasted a second."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    await publish_warm_up(settings)
    done_at: dict[RouteName, float] = {}
    async with running_worker(settings):

        async def every_member_consumes() -> bool:
            counts = [await mongo_db[COLLECTION[route]].estimated_document_count() for route in RouteName]
            return counts == [1] * len(RouteName)

        await wait_until(every_member_consumes, within=90, what="one event stored on every route")
        await publish_interleaved(settings, PER_ROUTE, first=tuple(reversed(settings.route_priority)))

        async def all_drained() -> bool:
            for route in RouteName:
                count = await mongo_db[COLLECTION[route]].estimated_document_count()
                if route not in done_at and count == PER_ROUTE + 1:
                    done_at[route] = time.monotonic()
            return len(done_at) == len(RouteName)

        await wait_until(all_drained, within=240, what="every route to drain")
    order = sorted(done_at, key=done_at.__getitem__)
    assert order == list(settings.route_priority), f"drained in the order {order}"
