"""A running worker's /metrics against real servers: commit lag per partition, the telemetry_buffer
gauges, redelivery outcomes, and /healthz of the `redeliver` process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from tests.integration.harness import (
    prepare_topics,
    publish_good,
    running_worker,
    settings_env,
    settings_for,
    wait_until,
)
from tests.integration.telemetry_support import buffered_documents, read_delivered, redelivery_settings
from tests.support.processes import stop
from tests.support.routes import COLLECTION
from tests.support.standins import free_port
from worker.settings import RouteName, Settings
from worker.telemetry import stats as buffer_stats

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def scrape(port: int) -> Samples:
    """Every sample of /metrics: (name, sorted labels) -> value; empty while the server is not listening yet."""
    try:
        status, body = await http_get(port, "/metrics")
    except OSError:
        return {}
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def lags(samples: Samples, topic: str) -> dict[int, float]:
    """persistence_consumer_lag_records of `topic`, per partition."""
    found = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "persistence_consumer_lag_records" and label["topic"] == topic:
            found[int(label["partition"])] = value
    return found


async def test_commit_lag_goes_to_zero_once_a_backlog_is_drained(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """After the worker has stored and committed a backlog, every partition of every input topic shows lag 0."""
    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, http_port=port)
    await prepare_topics(create_topics, settings)
    for seed, route in enumerate(RouteName, start=60):
        await publish_good(settings, route, 40, seed)
    async with running_worker(settings):

        async def drained() -> bool:
            samples = await scrape(port)
            per_topic = [lags(samples, settings.topic_for(route)) for route in RouteName]
            return all(lag == {0: 0.0, 1: 0.0, 2: 0.0} for lag in per_topic)

        await wait_until(drained, within=120, what="lag 0 on all 12 partitions")
        for collection in COLLECTION.values():
            assert await mongo_db[collection].count_documents({}) == 40


async def test_a_paused_fail_closed_route_shows_its_lag_until_mongodb_returns(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """While MongoDB is down a fail-closed route commits nothing: its lag is what was published since; 0 after catch-up."""
    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            fail_closed_routes="incidents", http_port=port)  # fmt: skip
    await prepare_topics(create_topics, settings)
    topic = settings.topic_for(RouteName.INCIDENTS)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
    db = client[settings.mongodb_database]
    try:
        async with running_worker(settings):
            await publish_good(settings, RouteName.INCIDENTS, 6, seed=70)

            async def lag_is(total: float) -> bool:
                found = lags(await scrape(port), topic)
                return len(found) == 3 and sum(found.values()) == total

            await wait_until(lambda: lag_is(0), within=90, what="the first 6 incidents committed")
            controllable_mongo.stop()
            await publish_good(settings, RouteName.INCIDENTS, 12, seed=71)
            await wait_until(lambda: lag_is(12), within=90, what="lag 12 while the route is paused")
            controllable_mongo.start()
            await wait_until(lambda: lag_is(0), within=120, what="lag 0 after the catch-up")
        assert await db.incidents.count_documents({}) == 18
    finally:
        await client.close()


def gauges(samples: Samples) -> tuple[float | None, ...]:
    def value(name: str) -> float | None:
        return samples.get((f"persistence_telemetry_buffer_{name}", ()))

    return value("pending"), value("parked"), value("oldest_pending_age_seconds")


async def test_buffer_gauges_follow_the_collection(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """The sampled pending and parked counts equal the collection's, and the age is the oldest unparked one's."""
    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, http_port=port,
                            telemetry_buffer_stats_interval_s=0.3)  # fmt: skip
    await prepare_topics(create_topics, settings)
    oldest = datetime.now(UTC) - timedelta(hours=2)
    documents = buffered_documents(12, seed=80, start=oldest)
    for document in documents[:3]:  # the three oldest are parked: the oldest pending is the 4th
        document["parked"] = True
    await mongo_db.telemetry_buffer.insert_many(documents)
    oldest_pending = documents[3]["buffered_at"]
    async with running_worker(settings):

        async def sampled(pending: int, parked: int) -> bool:
            found = gauges(await scrape(port))
            return found[:2] == (pending, parked)

        await wait_until(lambda: sampled(9, 3), within=60, what="9 pending, 3 parked")
        age = gauges(await scrape(port))[2]
        assert age is not None
        assert (datetime.now(UTC) - oldest_pending).total_seconds() - 60 <= age
        assert age <= (datetime.now(UTC) - oldest_pending).total_seconds()
        await mongo_db.telemetry_buffer.delete_many({"parked": None})
        await wait_until(lambda: sampled(0, 3), within=60, what="nothing pending")
        assert gauges(await scrape(port))[2] == 0


async def test_a_failed_sample_keeps_the_last_values(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """With MongoDB gone the sampler logs `telemetry_buffer_stats_failed` and /metrics keeps the last counts."""
    from structlog.testing import capture_logs

    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            http_port=port, telemetry_buffer_stats_interval_s=0.3)  # fmt: skip
    await prepare_topics(create_topics, settings)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri, tz_aware=True)
    documents = buffered_documents(5, seed=81, start=datetime.now(UTC) - timedelta(minutes=5))
    documents[0]["parked"] = True
    await client[settings.mongodb_database].telemetry_buffer.insert_many(documents)
    try:
        with capture_logs() as logs:
            async with running_worker(settings):

                async def sampled() -> bool:
                    return gauges(await scrape(port))[:2] == (4, 1)

                await wait_until(sampled, within=60, what="4 pending, 1 parked")
                controllable_mongo.stop()

                async def failed() -> bool:
                    return any(line["event"] == "telemetry_buffer_stats_failed" for line in logs)

                await wait_until(failed, within=90, what="a failed sample")
                assert gauges(await scrape(port))[:2] == (4, 1)
                controllable_mongo.start()
    finally:
        await client.close()


def start_redeliver(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m worker redeliver` as a process reading `settings`, its log lines in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "redeliver"], env=settings_env(settings), stderr=log
        )


async def test_redeliver_serves_outcomes_buffer_gauges_and_its_liveness(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any, tmp_path: Path
) -> None:
    """`redeliver` delivers the buffer and its /metrics count the delivered documents; /healthz and /readyz answer 200."""
    port = free_port()
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                                   http_port=port, telemetry_buffer_stats_interval_s=0.3)  # fmt: skip
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=2)
    await mongo_db.telemetry_buffer.insert_many(buffered_documents(20, seed=82))
    log_path = tmp_path / "redeliver.log"
    process = start_redeliver(settings, log_path)
    try:

        async def delivered_all() -> bool:
            samples = await scrape(port)
            outcome = samples.get(("persistence_telemetry_redelivery_total", (("outcome", "delivered"),)))
            return outcome == 20 and gauges(samples)[:2] == (0, 0)

        await wait_until(delivered_all, within=120, what="20 delivered, buffer gauges at 0")
        assert await http_get(port, "/healthz") == (200, b"ok\n")
        assert (await http_get(port, "/readyz"))[0] == 200
    finally:
        code = stop(process, 60)
    assert code == 0, log_path.read_text()
    assert len(await read_delivered(kafka_bootstrap, settings.kafka_telemetry_delivery_topic)) == 20


async def test_documents_parked_by_an_update_are_counted_parked(mongo_db: Any) -> None:
    """The loop parks with `$set: {parked: true}`: such documents count as parked, not pending."""
    documents = buffered_documents(4, seed=83, start=datetime.now(UTC) - timedelta(minutes=1))
    await mongo_db.telemetry_buffer.insert_many(documents)
    await mongo_db.telemetry_buffer.update_one({"_id": documents[0]["_id"]}, {"$set": {"parked": True}})
    stats = await buffer_stats.sample(mongo_db)
    assert (stats.pending, stats.parked) == (3, 1)
