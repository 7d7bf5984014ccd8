"""Failures on real servers: SIGKILL, SIGTERM, MongoDB outages (fail-open, fail-closed), retries,
a worker started without MongoDB, and credentials kept out of the logs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from tests.integration.harness import (
    WorkerProcess,
    committed_offsets,
    prepare_topics,
    publish,
    publish_good,
    read_topic,
    running_worker,
    settings_for,
    settled,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from tests.support.standins import free_port
from worker.settings import RouteName, Settings


async def total_documents(db: Any) -> int:
    return sum([await db[name].count_documents({}) for name in COLLECTION.values()])


async def committed_total(settings: Settings, partitions: int = 3) -> int:
    total = 0
    for route in RouteName:
        offsets = await committed_offsets(settings, settings.topic_for(route), partitions)
        total += sum(o or 0 for o in offsets.values())
    return total


async def test_sigkill_at_any_moment_then_restart_stores_every_event_once(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any, tmp_path: Path,
    processes: list[WorkerProcess],
) -> None:  # fmt: skip
    """A worker killed with SIGKILL three times mid-drain and restarted ends with every event stored exactly once."""
    settings = settings_for(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, kafka_max_batch_records=50
    )
    await prepare_topics(create_topics, settings)
    events = list(EventFactory(seed=21).stream(6000))
    for route in RouteName:
        await publish(
            kafka_bootstrap, settings.topic_for(route), [e.value for e in events if e.route == route]
        )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    kills_mid_drain, before = 0, await total_documents(mongo_db)
    for _ in range(3):
        worker.start()
        await wait_until(lambda b=before: _grew(mongo_db, b, 300), within=90, what="progress before the kill")
        worker.kill()
        # The server may still finish writes received before the kill: count once stable (see
        # tests/chaos/test_worker_kills.py), or late writes would pass for the next run's progress.
        before = await settled(lambda: total_documents(mongo_db))
        kills_mid_drain += before < len(events)
    worker.start()
    await wait_until(lambda: _committed_is(settings, len(events)), within=180, what="every offset committed")
    assert worker.terminate() == 0
    assert kills_mid_drain == 3, "each kill must land while the backlog is still draining"
    for route, name in COLLECTION.items():
        assert await mongo_db[name].count_documents({}) == sum(1 for e in events if e.route == route)


async def _grew(db: Any, before: int, by: int) -> bool:
    return await total_documents(db) >= before + by


async def _committed_is(settings: Settings, total: int) -> bool:
    return await committed_total(settings) == total


async def test_sigterm_drains_commits_and_exits_zero(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any, tmp_path: Path,
    processes: list[WorkerProcess],
) -> None:  # fmt: skip
    """SIGTERM mid-drain: the batch in hand is finished and committed, the process exits 0, and no offset passes a document."""
    settings = settings_for(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, kafka_max_batch_records=50
    )
    await prepare_topics(create_topics, settings)
    await publish_good(settings, RouteName.INCIDENTS, 3000, seed=22)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    await wait_until(lambda: _grew(mongo_db, 0, 100), within=60, what="first documents")
    started = time.monotonic()
    assert worker.terminate(timeout=40) == 0
    assert time.monotonic() - started < settings.shutdown_timeout_s + 5
    log = worker.log_text()
    assert '"shutdown_requested"' in log and '"worker_stopped"' in log
    assert 0 < await committed_total(settings) <= await mongo_db.incidents.count_documents({})


async def test_fail_open_route_dead_letters_after_retries_and_goes_on(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """With MongoDB down past the retries, a fail-open route logs `validation_audit_persist_failed`, dead-letters the records and commits."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri)
    await prepare_topics(create_topics, settings)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
    db = client[settings.mongodb_database]
    dlq = settings.dlq_topic(settings.topic_for(RouteName.VALIDATION))
    with capture_logs() as logs:
        async with running_worker(settings):
            await publish_good(settings, RouteName.VALIDATION, 10, seed=23)
            await wait_until(lambda: _count_is(db, "validation_audit", 10), within=60, what="first 10 stored")
            controllable_mongo.stop()
            await publish_good(settings, RouteName.VALIDATION, 10, seed=24)
            await wait_until(lambda: _committed_is(settings, 20), within=60, what="commit past the outage")
    dead = await read_topic(kafka_bootstrap, dlq)
    assert len(dead) == 10
    assert {dict(r.headers)["x-error-type"] for r in dead} == {b"persist_failed"}
    failed = [line for line in logs if line["event"] == "validation_audit_persist_failed"]
    assert failed and sum(line["records"] for line in failed) == 10
    assert any(line["event"] == "mongodb_write_retry" for line in logs)
    controllable_mongo.start()
    assert await db.validation_audit.count_documents({}) == 10
    await client.close()


async def _count_is(db: Any, name: str, count: int) -> bool:
    return await db[name].count_documents({}) == count


async def test_fail_closed_route_holds_its_partitions_until_mongodb_returns(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """A fail-closed route pauses, commits nothing past the failure and dead-letters nothing; it catches up when MongoDB returns."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            fail_closed_routes="incidents")  # fmt: skip
    await prepare_topics(create_topics, settings)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
    db = client[settings.mongodb_database]
    incidents_topic = settings.topic_for(RouteName.INCIDENTS)
    with capture_logs() as logs:
        async with running_worker(settings):
            await publish_good(settings, RouteName.INCIDENTS, 5, seed=25)
            await wait_until(lambda: _count_is(db, "incidents", 5), within=60, what="first 5 stored")
            await wait_until(lambda: _topic_committed(settings, incidents_topic, 5), within=30, what="commit")
            controllable_mongo.stop()
            await publish_good(settings, RouteName.INCIDENTS, 10, seed=26)
            await publish_good(settings, RouteName.VALIDATION, 4, seed=27)
            validation_dlq = settings.dlq_topic(settings.topic_for(RouteName.VALIDATION))
            await wait_until(lambda: _has_records(kafka_bootstrap, validation_dlq, 4), within=60,
                             what="the fail-open neighbour to give up")  # fmt: skip
            await asyncio.sleep(2)
            assert await _topic_committed(settings, incidents_topic, 5), "nothing committed past the failure"
            controllable_mongo.start()
            await wait_until(
                lambda: _count_is(db, "incidents", 15), within=60, what="catch-up after the outage"
            )
            await wait_until(
                lambda: _topic_committed(settings, incidents_topic, 15), within=30, what="commit"
            )
    assert await read_topic(kafka_bootstrap, settings.dlq_topic(incidents_topic), idle_ms=500) == []
    assert any(line["event"] == "partition_paused" for line in logs)
    assert not any(line["event"] == "incidents_persist_failed" for line in logs)
    await client.close()


async def _topic_committed(settings: Settings, topic: str, total: int) -> bool:
    offsets = await committed_offsets(settings, topic, 3)
    return sum(o or 0 for o in offsets.values()) == total


async def _has_records(bootstrap: str, topic: str, count: int) -> bool:
    return len(await read_topic(bootstrap, topic, idle_ms=300)) >= count


async def test_a_short_outage_is_bridged_by_retries(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """When MongoDB returns within the retry budget, records are stored, nothing is dead-lettered, and each retry is logged."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            retry_max_attempts=40, retry_max_interval_ms=300)  # fmt: skip
    await prepare_topics(create_topics, settings)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
    db = client[settings.mongodb_database]
    with capture_logs() as logs:
        async with running_worker(settings):
            await publish_good(settings, RouteName.TELEMETRY, 3, seed=28)
            await wait_until(lambda: _count_is(db, "telemetry_buffer", 3), within=60, what="first stored")
            controllable_mongo.stop()
            await publish_good(settings, RouteName.TELEMETRY, 5, seed=29)
            await wait_until(lambda: _logged(logs, "mongodb_write_retry", 2), within=30, what="retries")
            controllable_mongo.start()
            await wait_until(
                lambda: _count_is(db, "telemetry_buffer", 8), within=60, what="stored after the outage"
            )
    dlq = settings.dlq_topic(settings.topic_for(RouteName.TELEMETRY))
    assert await read_topic(kafka_bootstrap, dlq, idle_ms=500) == []
    retries = [line for line in logs if line["event"] == "mongodb_write_retry"]
    assert all(line["operation"] == "telemetry_buffer" and "error" in line for line in retries)
    await client.close()


async def _logged(logs: list[dict[str, Any]], event: str, at_least: int) -> bool:
    return sum(1 for line in logs if line["event"] == event) >= at_least


async def test_worker_started_without_mongodb_logs_client_not_initialized_and_catches_up(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any
) -> None:
    """Writes attempted before MongoDB ever answered log `mongodb_client_not_initialized`; once it answers, the records are stored."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            fail_closed_routes="incidents")  # fmt: skip
    await prepare_topics(create_topics, settings)
    controllable_mongo.stop()
    with capture_logs() as logs:
        async with running_worker(settings):
            await publish_good(settings, RouteName.INCIDENTS, 3, seed=30)
            await wait_until(
                lambda: _logged(logs, "mongodb_client_not_initialized", 1), within=60, what="the log"
            )
            controllable_mongo.start()
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
            db = client[settings.mongodb_database]
            await wait_until(
                lambda: _count_is(db, "incidents", 3), within=60, what="stored once MongoDB answers"
            )
            await client.close()


async def test_credentials_in_mongodb_uri_never_reach_the_logs(
    unique_name: str, kafka_bootstrap: str, create_topics: Any, tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """A password in MONGODB_URI appears in no log line, even in connection errors."""
    uri = f"mongodb://alice:s3cr3t-pw@127.0.0.1:{free_port()}/?authSource=admin"
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=uri)
    await prepare_topics(create_topics, settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    await wait_until(
        lambda: _log_has(worker, '"mongodb_unavailable"'), within=30, what="the unavailable line"
    )
    assert worker.terminate() == 0
    log = worker.log_text()
    assert "s3cr3t-pw" not in log
    assert "mongodb://***@127.0.0.1" in log


async def _log_has(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log_text()
