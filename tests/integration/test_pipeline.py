"""End to end on real servers: the four routes, idempotency, bad input, batching, indexes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from schemas.documents import canonical_hash
from tests.integration.harness import (
    committed_offsets,
    prepare_topics,
    publish,
    read_topic,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from worker.mongo.indexes import EXPECTED_INDEXES
from worker.settings import RouteName, Settings


@pytest.fixture
async def settings(unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any) -> Settings:
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    return settings


async def publish_events(settings: Settings, events: list[tuple[RouteName, dict[str, Any]]]) -> None:
    for route in RouteName:
        values = [orjson.dumps(event) for r, event in events if r == route]
        await publish(settings.kafka_bootstrap_servers, settings.topic_for(route), values)


async def counts(db: Any) -> dict[str, int]:
    return {name: await db[name].count_documents({}) for name in COLLECTION.values()}


async def wait_for_counts(db: Any, expected: dict[str, int], within: float = 60) -> None:
    async def reached() -> bool:
        return await counts(db) == expected

    await wait_until(reached, within=within, what=f"collections to hold {expected}")


async def test_each_event_kind_becomes_its_documented_document(settings: Settings, mongo_db: Any) -> None:
    """Validation, result, incident and telemetry events land in their collections with the guide's fields."""
    factory = EventFactory(seed=11)
    validation, result, incident, telemetry = (factory.good(route) for route in RouteName)
    incident["severity"] = "high"
    result["status"] = "completed"
    await publish_events(settings, [(RouteName.VALIDATION, validation), (RouteName.RESULTS, result),
                                    (RouteName.INCIDENTS, incident), (RouteName.TELEMETRY, telemetry)])  # fmt: skip
    async with running_worker(settings):
        await wait_for_counts(mongo_db, dict.fromkeys(COLLECTION.values(), 1))

    audit = await mongo_db.validation_audit.find_one()
    assert audit["validation_result"] == validation["validation_result"]
    assert audit["hash"] == canonical_hash(validation["validation_result"])
    assert audit["timestamp"] == datetime.fromisoformat(validation["timestamp"]).astimezone(UTC)
    stored_result = await mongo_db.workflow_results.find_one()
    assert stored_result["_id"] == stored_result["workflow_id"] == result["workflow_id"]
    assert stored_result["status"] == "COMPLETED"
    assert stored_result["sla_status"] == result["sla_status"]
    stored_incident = await mongo_db.incidents.find_one()
    assert stored_incident["severity"] == "HIGH"
    assert stored_incident["details"] == incident["details"]
    buffered = await mongo_db.telemetry_buffer.find_one()
    assert buffered["retry_count"] == 0
    assert isinstance(buffered["buffered_at"], datetime)
    assert buffered["metrics"] == telemetry["metrics"], "dotted metric names are stored as they are"


async def test_redelivered_and_republished_events_are_stored_once(settings: Settings, mongo_db: Any) -> None:
    """Re-reading every record (a new consumer group) and publishing identical events twice adds no document."""
    factory = EventFactory(seed=12)
    events = [(route, factory.good(route)) for _ in range(25) for route in RouteName]
    anonymous = factory.good(RouteName.INCIDENTS)
    anonymous.pop("event_id")
    events += [(RouteName.INCIDENTS, anonymous), (RouteName.INCIDENTS, anonymous)]
    await publish_events(settings, events + events)
    expected = {"validation_audit": 25, "workflow_results": 25, "incidents": 26, "telemetry_buffer": 25}
    async with running_worker(settings):
        await wait_for_counts(mongo_db, expected)
    rereading = settings.model_copy(update={"kafka_consumer_group": settings.kafka_consumer_group + "-again"})
    async with running_worker(rereading):
        await wait_until(lambda: _all_committed(rereading), within=60, what="the second group to catch up")
    assert await counts(mongo_db) == expected


async def _all_committed(settings: Settings) -> bool:
    offsets = await committed_offsets(settings, settings.topic_for(RouteName.INCIDENTS), 3)
    return sum(o or 0 for o in offsets.values()) == 54


async def test_older_workflow_result_never_overwrites_a_newer_one(settings: Settings, mongo_db: Any) -> None:
    """A result whose consolidated_at is older than the stored one is skipped, whatever the arrival order."""
    newer = EventFactory(seed=13).result()
    newer.update(status="COMPLETED", consolidated_at="2026-11-25T12:00:00Z", event_id="new")
    older = {**newer, "status": "FAILED", "consolidated_at": "2026-11-25T11:00:00+00:00", "event_id": "old"}
    await publish(settings.kafka_bootstrap_servers, settings.topic_for(RouteName.RESULTS),
                  [orjson.dumps(newer), orjson.dumps(older)], keys=[b"k", b"k"])  # fmt: skip
    with capture_logs() as logs:
        async with running_worker(settings):
            await wait_until(
                lambda: _committed_total(settings, RouteName.RESULTS, 2), within=60, what="commit"
            )
    stored = await mongo_db.workflow_results.find_one({"_id": newer["workflow_id"]})
    assert stored["status"] == "COMPLETED"
    assert stored["consolidated_at"] == datetime(2026, 11, 25, 12, tzinfo=UTC)
    saved = [line for line in logs if line["event"] == "workflow_result_saved"]
    assert sum(line["skipped"] for line in saved) == 1


async def _committed_total(settings: Settings, route: RouteName, total: int) -> bool:
    offsets = await committed_offsets(settings, settings.topic_for(route), 3)
    return sum(o or 0 for o in offsets.values()) == total


BAD_INPUTS: dict[str, tuple[RouteName, bytes]] = {
    "not_json": (RouteName.INCIDENTS, b"{oops"),
    "not_utf8": (RouteName.INCIDENTS, b'{"workflow_id": "\xff"}'),
    "not_object": (RouteName.INCIDENTS, b"[1, 2]"),
    "wrong_type": (RouteName.VALIDATION, orjson.dumps({**EventFactory(seed=1).validation(), "plan_id": 7})),
    "missing_field": (
        RouteName.TELEMETRY,
        orjson.dumps({"metrics": {}, "timestamp": "2026-11-25T10:00:00Z"}),
    ),
    "unknown_severity": (
        RouteName.INCIDENTS,
        orjson.dumps({**EventFactory(seed=2).incident(), "severity": "meh"}),
    ),
    "negative_violations": (
        RouteName.RESULTS,
        orjson.dumps({**EventFactory(seed=3).result(), "sla_status": {"violations_count": -1}}),
    ),
    "dollar_key": (
        RouteName.INCIDENTS,
        orjson.dumps({**EventFactory(seed=4).incident(), "details": {"a": {"$gt": 1}}}),
    ),
    "nul_key": (
        RouteName.TELEMETRY,
        orjson.dumps({**EventFactory(seed=5).telemetry(), "metrics": {"a\x00b": 1}}),
    ),
    "too_large": (
        RouteName.INCIDENTS,
        orjson.dumps({**EventFactory(seed=6).incident(), "details": {"x": "y" * 5000}}),
    ),
}
EXPECTED_REASON = {
    "wrong_type": "schema_violation",
    "missing_field": "schema_violation",
    "unknown_severity": "schema_violation",
    "negative_violations": "schema_violation",
    "dollar_key": "forbidden_key",
    "nul_key": "forbidden_key",
}


async def test_bad_input_is_dead_lettered_with_its_coordinates_and_good_neighbours_are_stored(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """Each kind of bad record goes to <topic>.dlq with its key, value, headers and the error; good ones around it are stored."""
    settings = settings_for(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, max_event_bytes=4096
    )
    await prepare_topics(create_topics, settings, partitions=1)
    factory = EventFactory(seed=14)
    offsets: dict[str, int] = {}
    published_per_route: dict[RouteName, int] = dict.fromkeys(RouteName, 0)
    for case, (route, value) in BAD_INPUTS.items():
        offsets[case] = published_per_route[route] + 1
        published_per_route[route] += 3
        good = orjson.dumps(factory.good(route))
        await publish(kafka_bootstrap, settings.topic_for(route), [good, value, good.replace(b'"event_id":"', b'"event_id":"x')],
                      keys=[None, case.encode(), None], headers=[("trace", b"abc")])  # fmt: skip
    with capture_logs() as logs:
        async with running_worker(settings):
            await wait_for_counts(
                mongo_db,
                {"validation_audit": 2, "workflow_results": 1, "incidents": 12, "telemetry_buffer": 4},
            )
    dead = {}
    for route in RouteName:
        for record in await read_topic(kafka_bootstrap, settings.dlq_topic(settings.topic_for(route))):
            dead[record.key.decode()] = record
    assert sorted(dead) == sorted(BAD_INPUTS)
    for case, record in dead.items():
        route, value = BAD_INPUTS[case]
        headers = {key: val.decode() for key, val in record.headers}
        assert record.value == value
        assert headers["trace"] == "abc"
        assert headers["x-error-type"] == "validation"
        assert headers["x-error-reason"] == EXPECTED_REASON.get(case, case)
        assert headers["x-source-topic"] == settings.topic_for(route)
        assert (headers["x-source-partition"], headers["x-source-offset"]) == ("0", str(offsets[case]))
    rejected = [line for line in logs if line["event"] == "event_rejected"]
    assert len(rejected) == len(BAD_INPUTS)
    assert all({"topic", "partition", "offset", "reason", "detail"} <= line.keys() for line in rejected)


async def test_records_are_written_in_batches_not_one_by_one(settings: Settings, mongo_db: Any) -> None:
    """A backlog of 400 validations is stored with a handful of bulk writes (one saved line per partition batch)."""
    factory = EventFactory(seed=15)
    await publish_events(settings, [(RouteName.VALIDATION, factory.validation()) for _ in range(400)])
    with capture_logs() as logs:
        async with running_worker(settings):
            await wait_for_counts(
                mongo_db,
                {"validation_audit": 400, "workflow_results": 0, "incidents": 0, "telemetry_buffer": 0},
            )
    saved = [line for line in logs if line["event"] == "validation_audit_saved"]
    assert sum(line["stored"] for line in saved) == 400
    assert len(saved) <= 400 / 20, f"{len(saved)} saved lines for 400 records"


async def test_start_up_creates_the_guides_indexes(settings: Settings, mongo_db: Any) -> None:
    """Starting the worker creates every index the guide lists, compared by keys and options."""
    async with running_worker(settings):
        await wait_until(lambda: _has_indexes(mongo_db), within=30, what="indexes")


async def _has_indexes(db: Any) -> bool:
    for collection, specs in EXPECTED_INDEXES.items():
        cursor = await db[collection].list_indexes()
        present = {
            tuple((k, int(v)) for k, v in info["key"].items()): info for info in await cursor.to_list()
        }
        for spec in specs:
            if spec.keys not in present or bool(present[spec.keys].get("unique")) != spec.unique:
                return False
    return True
