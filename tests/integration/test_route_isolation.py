"""Routes apart on real servers: a route held up never holds back another's records, and
under a backlog on every route they drain in ROUTE_PRIORITY's order.

Counts use estimated_document_count: the stand-in's count_documents scans (seconds on 30,000).
"""

from __future__ import annotations

import time
from typing import Any

from tests.faultproxy import FaultProxy
from tests.integration.harness import prepare_topics, publish_good, running_worker, settings_for, wait_until
from tests.mongo_faults import WriteRefusal, through_proxy, upstream_of
from worker.settings import RouteName

COLLECTION = {
    RouteName.VALIDATION: "validation_audit",
    RouteName.RESULTS: "workflow_results",
    RouteName.INCIDENTS: "incidents",
    RouteName.TELEMETRY: "telemetry_buffer",
}
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


async def test_under_a_backlog_on_every_route_they_drain_in_route_priority_order(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """With 4,000 events waiting on each route and one write slot (MONGODB_WRITE_CONCURRENCY=1),
    each freed slot goes to the highest route waiting: incidents and results are drained before
    telemetry. (Only write slots are ordered: while a higher route is between two batches
    (commit, poll, decoding) a lower route's waiting write takes the slot, so the lower routes
    drain too, more slowly; validations come between, in an order that also depends on when
    each one's group member got its partitions.)"""
    settings = settings_for(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, mongodb_write_concurrency=1
    )
    await prepare_topics(create_topics, settings)
    for seed, route in enumerate(RouteName):
        await publish_good(settings, route, PER_ROUTE, seed=seed + 10)
    done_at: dict[RouteName, float] = {}
    async with running_worker(settings):

        async def all_drained() -> bool:
            for route in RouteName:
                if route not in done_at and await mongo_db[COLLECTION[route]].estimated_document_count() == PER_ROUTE:
                    done_at[route] = time.monotonic()
            return len(done_at) == len(RouteName)

        await wait_until(all_drained, within=240, what="every route to drain")
    order = sorted(done_at, key=done_at.__getitem__)
    assert order.index(RouteName.INCIDENTS) < order.index(RouteName.TELEMETRY), f"drained in the order {order}"
    assert order.index(RouteName.RESULTS) < order.index(RouteName.TELEMETRY), f"drained in the order {order}"
