"""Operator commands and the guide's queries against real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.integration.harness import (
    prepare_topics,
    publish,
    running_worker,
    settings_env,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from worker.kafka.topics import needed_topics
from worker.mongo import queries
from worker.mongo.indexes import EXPECTED_INDEXES
from worker.settings import RouteName, Settings


def indexes_cli(action: str, mongo_uri: str, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database, "LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "worker", "indexes", action], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip


async def test_indexes_check_reports_missing_then_ensure_creates_them(mongo_uri: str, mongo_db: Any) -> None:
    """`indexes check` exits 1 on an empty database, `ensure` creates every index, then `check` exits 0."""
    assert indexes_cli("check", mongo_uri, mongo_db.name).returncode == 1
    ensured = indexes_cli("ensure", mongo_uri, mongo_db.name)
    assert ensured.returncode == 0, ensured.stderr
    assert ensured.stdout.count("created") == sum(len(specs) for specs in EXPECTED_INDEXES.values())
    checked = indexes_cli("check", mongo_uri, mongo_db.name)
    assert checked.returncode == 0
    assert "MISSING" not in checked.stdout


async def test_an_index_with_other_options_is_reported_and_never_dropped(
    mongo_uri: str, mongo_db: Any
) -> None:
    """A unique index on incidents.type conflicts with the expected plain one: reported, exit 1, left in place."""
    await mongo_db.incidents.create_index([("type", 1)], unique=True)
    result = indexes_cli("ensure", mongo_uri, mongo_db.name)
    assert result.returncode == 1
    assert "CONFLICT" in result.stdout and "incidents" in result.stdout
    cursor = await mongo_db.incidents.list_indexes()
    by_keys = {tuple(info["key"].items()): info for info in await cursor.to_list()}
    assert by_keys[(("type", 1),)].get("unique") is True


async def test_indexes_command_says_clearly_when_mongodb_is_unreachable(mongo_db: Any) -> None:
    """An unreachable MongoDB gives exit 3 and an error line naming the server, without credentials."""
    result = indexes_cli(
        "check", "mongodb://bob:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300", mongo_db.name
    )
    assert result.returncode == 3
    assert "127.0.0.1:1" in result.stderr and "hunter2" not in result.stderr


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(
    server="nx-27017",
    raises=AssertionError,
    reason="nx-27017 groups booleans under 1/0 keys instead of true/false",
)
async def test_validations_by_outcome_groups_on_the_boolean(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """The guide's `$group` on validation_result.valid answers totals under true and false."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    factory = EventFactory(seed=31)
    events = [factory.validation() for _ in range(40)]
    await publish(
        kafka_bootstrap, settings.topic_for(RouteName.VALIDATION), [orjson.dumps(e) for e in events]
    )
    async with running_worker(settings):
        await wait_until(lambda: _stored(mongo_db, 40), within=60, what="validations stored")
    valid = sum(1 for e in events if e["validation_result"]["valid"])
    outcome = {row["_id"]: row["total"] for row in await queries.validations_by_outcome(mongo_db)}
    assert outcome == {False: 40 - valid, True: valid}
    assert all(type(key) is bool for key in outcome)


async def _stored(db: Any, count: int) -> bool:
    return await db.validation_audit.count_documents({}) == count


async def test_guide_queries_answer_from_stored_documents(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """SLA violations, FAILED workflows, recent CRITICAL incidents, incidents by type and plan history match what was published."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    factory = EventFactory(seed=32)
    results = [factory.result() for _ in range(30)]
    incidents = [factory.incident() for _ in range(30)]
    validations = [factory.validation() for _ in range(30)]
    for route, events in (
        (RouteName.RESULTS, results),
        (RouteName.INCIDENTS, incidents),
        (RouteName.VALIDATION, validations),
    ):
        await publish(kafka_bootstrap, settings.topic_for(route), [orjson.dumps(e) for e in events])
    async with running_worker(settings):
        await wait_until(lambda: _all_stored(mongo_db), within=60, what="documents stored")
    violated = {r["workflow_id"] for r in results if r["sla_status"]["violations_count"] > 0}
    assert {d["_id"] for d in await queries.workflows_with_sla_violations(mongo_db, limit=100)} == violated
    failed = {r["workflow_id"] for r in results if r["status"].upper() == "FAILED"}
    assert {d["_id"] for d in await queries.workflows_by_status(mongo_db, "failed", limit=100)} == failed
    critical = sorted(
        (i["timestamp"] for i in incidents if i["severity"].upper() == "CRITICAL"), reverse=True
    )[:3]
    recent = await queries.recent_incidents(mongo_db, "CRITICAL", limit=3)
    assert [d["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ") for d in recent] == critical
    by_type = {row["_id"]: row["total"] for row in await queries.incidents_by_type(mongo_db)}
    assert by_type == {t: sum(1 for i in incidents if i["type"] == t) for t in {i["type"] for i in incidents}}
    plan = validations[0]["plan_id"]
    history = await queries.plan_validation_history(mongo_db, plan)
    assert [d["timestamp"] for d in history] == sorted((d["timestamp"] for d in history), reverse=True)
    assert len(history) == sum(1 for v in validations if v["plan_id"] == plan)


async def _all_stored(db: Any) -> bool:
    return all(
        [await db[c].count_documents({}) == 30 for c in ("workflow_results", "incidents", "validation_audit")]
    )


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)  # fmt: skip


def check_settings(name: str, kafka_bootstrap: str, mongo_uri: str) -> Settings:
    """A test's own topics (the telemetry delivery topic included) and database, as `check` will look for them."""
    return settings_for(name=name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, redelivery_enabled=True,
                        kafka_telemetry_delivery_topic=f"{name}.delivery")  # fmt: skip


async def test_check_exits_zero_when_both_servers_answer_and_three_otherwise(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any
) -> None:
    """`check` is a usable exec probe: 0 with both servers up and the topics there, 3 naming the one that does not answer."""
    settings = check_settings(unique_name, kafka_bootstrap, mongo_uri)
    await create_topics(*(topic.name for topic in needed_topics(settings)))
    good = cli("check", env=settings_env(settings))
    assert good.returncode == 0, good.stdout + good.stderr
    bad_uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"
    bad = cli("check", env={**settings_env(settings), "MONGODB_URI": bad_uri})
    assert bad.returncode == 3
    assert "MongoDB" in bad.stderr and "Kafka" not in bad.stderr


async def test_check_names_the_one_missing_topic_and_exits_1(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any
) -> None:
    """With every topic but one dead-letter topic, `check` exits 1 and names that one on a line of its own."""
    settings = check_settings(unique_name, kafka_bootstrap, mongo_uri)
    missing = settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS))
    await create_topics(*(topic.name for topic in needed_topics(settings) if topic.name != missing))
    result = cli("check", env=settings_env(settings))
    assert result.returncode == 1, result.stdout + result.stderr
    absent = [line for line in result.stdout.splitlines() if line.endswith("does not exist")]
    assert absent == [f"not ok: topic {missing} (dead letters of incidents) does not exist"]
    assert "not ok: 1 of 9 topics missing" in result.stdout and result.stderr == ""


async def test_check_names_the_input_topics_with_fewer_partitions_than_max_replicas(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any
) -> None:
    """With --max-replicas 3, each input topic of 2 partitions is a warning line; dead-letter topics are not compared."""
    settings = check_settings(unique_name, kafka_bootstrap, mongo_uri)
    needed = needed_topics(settings)
    await create_topics(*(topic.name for topic in needed if topic.consumed), partitions=2)
    await create_topics(*(topic.name for topic in needed if not topic.consumed), partitions=1)
    result = cli("check", "--max-replicas", "3", env=settings_env(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    warned = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("warning: topic")]
    assert warned == [topic.name for topic in needed if topic.consumed]
    assert all("2 partitions, fewer than --max-replicas 3" in line for line in result.stdout.splitlines()
               if line.startswith("warning: topic"))  # fmt: skip


async def test_running_worker_serves_readiness_and_metrics(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """While running, /readyz answers 200 and /metrics counts the stored records of each route."""
    from tests.support.standins import free_port

    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, http_port=port)
    await prepare_topics(create_topics, settings)
    factory = EventFactory(seed=33)
    await publish(
        kafka_bootstrap,
        settings.topic_for(RouteName.INCIDENTS),
        [orjson.dumps(factory.incident()) for _ in range(7)],
    )
    async with running_worker(settings):
        await wait_until(lambda: _incidents(mongo_db, 7), within=60, what="incidents stored")
        ready = await _get(port, "/readyz")
        metrics = await _get(port, "/metrics")
        query = cli("query", "incidents", "--severity", "high", "--json",
                    env={"MONGODB_URI": mongo_uri, "MONGODB_DATABASE": mongo_db.name})  # fmt: skip
    assert ready.startswith(b"HTTP/1.1 200")
    assert b'persistence_records_stored_total{route="incidents"}' in metrics
    assert query.returncode == 0
    rows = orjson.loads(query.stdout)
    assert all(row["severity"] == "HIGH" for row in rows)
    assert len(rows) == await mongo_db.incidents.count_documents({"severity": "HIGH"})


async def _incidents(db: Any, count: int) -> bool:
    return await db.incidents.count_documents({}) == count


async def _get(port: int, path: str) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    body = await reader.read()
    writer.close()
    return body


async def _ttl_of(db: Any, collection: str, field: str) -> Any:
    cursor = await db[collection].list_indexes()
    for info in await cursor.to_list():
        if list(info["key"].items()) == [(field, 1)]:
            return info.get("expireAfterSeconds")
    raise AssertionError(f"no index on {collection}.{field}")


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(
    server="nx-27017",
    raises=AssertionError,
    reason="nx-27017 answers collMod ok but changes no index: expireAfterSeconds is neither added nor changed",
)
async def test_ttl_retention_is_off_by_default_then_set_and_changed_in_place(
    mongo_uri: str, mongo_db: Any
) -> None:
    """No TTL by default; TTL_VALIDATION_AUDIT_DAYS makes the timestamp index expire; a new value updates it."""
    base = {"MONGODB_URI": mongo_uri, "MONGODB_DATABASE": mongo_db.name}
    assert cli("indexes", "ensure", env=base).returncode == 0
    assert await _ttl_of(mongo_db, "validation_audit", "timestamp") is None
    thirty = cli("indexes", "ensure", env={**base, "TTL_VALIDATION_AUDIT_DAYS": "30"})
    assert thirty.returncode == 0, thirty.stdout + thirty.stderr
    assert await _ttl_of(mongo_db, "validation_audit", "timestamp") == 30 * 86_400
    ten = cli("indexes", "ensure", env={**base, "TTL_VALIDATION_AUDIT_DAYS": "10"})
    assert ten.returncode == 0 and "updated" in ten.stdout
    assert await _ttl_of(mongo_db, "validation_audit", "timestamp") == 10 * 86_400
    assert cli("indexes", "check", env={**base, "TTL_VALIDATION_AUDIT_DAYS": "10"}).returncode == 0
    assert cli("indexes", "check", env=base).returncode == 1, (
        "a TTL left in place after turning it off is reported"
    )
