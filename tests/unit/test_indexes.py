"""Specification of worker.mongo.indexes: the guide's indexes and how they are checked and created."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure
from structlog.testing import capture_logs

from tests.support.mongo import ID_INDEX, FakeCollection, FakeDatabase
from worker.errors import PermanentError
from worker.mongo.indexes import EXPECTED_INDEXES, IndexSpec, ensure_indexes, inspect_collection


def asc(*names: str) -> tuple[tuple[str, int], ...]:
    return tuple((name, 1) for name in names)


def test_expected_indexes_follow_the_persistence_guide() -> None:
    """Each collection gets exactly the guide's indexes, workflow_id unique on workflow_results."""
    assert {
        name: [(spec.keys, spec.unique) for spec in specs] for name, specs in EXPECTED_INDEXES.items()
    } == {
        "validation_audit": [
            (asc("plan_id"), False),
            (asc("workflow_id"), False),
            (asc("timestamp"), False),
            (asc("plan_id", "timestamp"), False),
        ],
        "workflow_results": [
            (asc("workflow_id"), True),
            (asc("plan_id"), False),
            (asc("status"), False),
            (asc("consolidated_at"), False),
            (asc("status", "consolidated_at"), False),
        ],
        "incidents": [
            (asc("workflow_id"), False),
            (asc("type"), False),
            (asc("severity"), False),
            (asc("timestamp"), False),
            (asc("severity", "timestamp"), False),
        ],
        "telemetry_buffer": [
            (asc("correlation.workflow_id"), False),
            (asc("buffered_at"), False),
            (asc("retry_count"), False),
            (asc("retry_count", "buffered_at"), False),
            (asc("due_at"), False),  # the redelivery claim's (sparse), beyond the guide
            (asc("state", "parked", "buffered_at"), False),  # pending/parked counts and replay's, beyond the guide
            (asc("delivered_at"), False),  # the tombstones' expiry, beyond the guide
        ],
    }
    assert all(spec.expire_after_seconds is None for specs in EXPECTED_INDEXES.values() for spec in specs)


async def test_an_index_description_from_the_server_is_read_as_a_comparable_spec() -> None:
    """An index description from the server (float directions, unique, TTL) matches the spec it stands for."""
    compound = IndexSpec(keys=(("status", 1), ("consolidated_at", -1)), unique=True)
    ttl = IndexSpec(keys=(("buffered_at", 1),), expire_after_seconds=3600)
    database = FakeDatabase(
        c=FakeCollection(indexes=[
            {"v": 2, "key": {"status": 1.0, "consolidated_at": -1.0}, "name": "x", "unique": True},
            {"key": {"buffered_at": 1}, "expireAfterSeconds": 3600.0},
        ])
    )  # fmt: skip
    report = await inspect_collection(database, "c", (compound, ttl))  # type: ignore[arg-type]
    assert (report.present, report.missing, report.conflicts) == ([compound, ttl], [], [])


def test_describe_shows_keys_and_options() -> None:
    """`describe` renders keys with directions and the unique/TTL options, for logs and the CLI."""
    assert IndexSpec(keys=asc("workflow_id"), unique=True).describe() == "(workflow_id:1) unique"
    assert IndexSpec(keys=(("a", 1), ("b", -1)), expire_after_seconds=60).describe() == "(a:1, b:-1) ttl=60s"


async def test_inspect_reports_present_missing_and_conflicting_indexes() -> None:
    """Indexes are matched by keys, not names: same keys and options is present, other options a conflict."""
    database = FakeDatabase(
        workflow_results=FakeCollection(indexes=[
            ID_INDEX,
            {"v": 2, "key": {"plan_id": 1.0}, "name": "a_name_the_server_chose"},
            {"v": 2, "key": {"workflow_id": 1}, "name": "workflow_id_1"},
        ])
    )  # fmt: skip
    report = await inspect_collection(database, "workflow_results", EXPECTED_INDEXES["workflow_results"])  # type: ignore[arg-type]
    assert report.present == [IndexSpec(keys=asc("plan_id"))]
    assert report.conflicts == [
        (IndexSpec(keys=asc("workflow_id"), unique=True), IndexSpec(keys=asc("workflow_id")))
    ]
    assert [spec.keys for spec in report.missing] == [
        asc("status"),
        asc("consolidated_at"),
        asc("status", "consolidated_at"),
    ]
    assert not report.healthy


async def test_ensure_creates_every_missing_index_and_is_idempotent() -> None:
    """On empty collections every expected index is created; a second run creates nothing."""
    database = FakeDatabase()
    with capture_logs() as logs:
        reports = await ensure_indexes(database)  # type: ignore[arg-type]
    assert all(report.healthy for report in reports)
    assert {r.collection: r.created for r in reports} == {k: list(v) for k, v in EXPECTED_INDEXES.items()}
    assert [e["event"] for e in logs] == ["indexes_created"] * len(EXPECTED_INDEXES)
    unique = [i for i in database["workflow_results"].indexes if i.get("unique")]
    assert [i["key"] for i in unique] == [{"workflow_id": 1}]

    with capture_logs() as logs:
        again = await ensure_indexes(database)  # type: ignore[arg-type]
    assert all(report.created == [] and report.healthy for report in again)
    assert logs == []


async def test_ensure_logs_conflicts_and_leaves_them_in_place() -> None:
    """A conflicting index is logged as `index_conflict` with a hint and is neither dropped nor duplicated."""
    existing = {"v": 2, "key": {"workflow_id": 1}, "name": "workflow_id_1"}
    database = FakeDatabase(workflow_results=FakeCollection(indexes=[ID_INDEX, existing]))
    with capture_logs() as logs:
        [report] = await ensure_indexes(database, {"workflow_results": EXPECTED_INDEXES["workflow_results"]})  # type: ignore[arg-type]
    conflicts = [e for e in logs if e["event"] == "index_conflict"]
    assert conflicts == [
        {
            "event": "index_conflict",
            "log_level": "error",
            "collection": "workflow_results",
            "expected": "(workflow_id:1) unique",
            "found": "(workflow_id:1)",
            "hint": "drop or modify the existing index by hand, then run `indexes ensure`",
        }
    ]
    assert not report.healthy
    assert [i["key"] for i in database["workflow_results"].indexes].count({"workflow_id": 1}) == 1


async def test_listing_errors_are_converted() -> None:
    """A PyMongo error while listing indexes leaves as the worker's error type (here permanent: unauthorised)."""
    database = FakeDatabase()
    database.collections["incidents"] = FakeCollection(indexes=[], error=OperationFailure("not authorized", code=13))
    with pytest.raises(PermanentError):
        await inspect_collection(database, "incidents", EXPECTED_INDEXES["incidents"])  # type: ignore[arg-type]


async def test_other_kinds_of_index_do_not_prevent_inspection() -> None:
    """A text or hashed index added by an operator is tolerated; the expected ones are still checked."""
    database = FakeDatabase(
        incidents=FakeCollection(indexes=[
            ID_INDEX,
            {"v": 2, "key": {"_fts": "text", "_ftsx": 1}, "name": "details_text"},
            {"v": 2, "key": {"workflow_id": "hashed"}, "name": "workflow_id_hashed"},
        ])
    )  # fmt: skip
    report = await inspect_collection(database, "incidents", EXPECTED_INDEXES["incidents"])  # type: ignore[arg-type]
    assert len(report.missing) == len(EXPECTED_INDEXES["incidents"])
