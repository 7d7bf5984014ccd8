"""Retention: TTL indexes are off by default, set on demand, and changed in place with collMod."""

from __future__ import annotations

from tests.support.mongo import FakeDatabase
from worker.mongo.indexes import EXPECTED_INDEXES, ensure_indexes, expected_indexes, with_retention
from worker.settings import Settings


def test_no_retention_means_exactly_the_guides_indexes() -> None:
    """With every TTL unset, the expected indexes are the guide's, none expiring."""
    assert with_retention({}) == dict(EXPECTED_INDEXES)


def test_a_ttl_applies_to_the_collections_date_index_only() -> None:
    """TTL days turn the date field's single index into a TTL index of days x 86400 seconds."""
    expected = with_retention({"telemetry_buffer": 7})
    ttl = [spec for spec in expected["telemetry_buffer"] if spec.expire_after_seconds is not None]
    assert [(spec.keys, spec.expire_after_seconds) for spec in ttl] == [((("buffered_at", 1),), 7 * 86_400)]
    assert expected["incidents"] == EXPECTED_INDEXES["incidents"]


async def test_changing_a_ttl_uses_collmod_instead_of_failing() -> None:
    """An existing date index gets its TTL through collMod, and a second value replaces the first."""
    db = FakeDatabase()
    await ensure_indexes(db, with_retention({}))  # type: ignore[arg-type]
    reports = await ensure_indexes(db, with_retention({"validation_audit": 30}))  # type: ignore[arg-type]
    audit = next(r for r in reports if r.collection == "validation_audit")
    assert [spec.expire_after_seconds for spec in audit.updated] == [30 * 86_400]
    assert audit.healthy
    await ensure_indexes(db, with_retention({"validation_audit": 10}))  # type: ignore[arg-type]
    assert db.commands[-1] == (
        "collMod",
        "validation_audit",
        {"index": {"keyPattern": {"timestamp": 1}, "expireAfterSeconds": 864_000}},
    )


async def test_turning_a_ttl_off_is_reported_not_silently_dropped() -> None:
    """A TTL index present while retention is off stays, and is reported as a conflict."""
    db = FakeDatabase()
    await ensure_indexes(db, with_retention({"incidents": 5}))  # type: ignore[arg-type]
    await ensure_indexes(db, with_retention({"incidents": 5}))  # type: ignore[arg-type]
    reports = await ensure_indexes(db, with_retention({}))  # type: ignore[arg-type]
    incidents = next(r for r in reports if r.collection == "incidents")
    assert not incidents.healthy
    assert [found.expire_after_seconds for _, found in incidents.conflicts] == [5 * 86_400]


def test_no_index_expires_anything_by_default() -> None:
    """With default settings no index has a TTL (tombstones are purged by the redelivery loop, not by a TTL index)."""
    expected = expected_indexes(Settings())
    assert all(spec.expire_after_seconds is None for specs in expected.values() for spec in specs)


async def test_the_claim_index_is_created_sparse() -> None:
    """`due_at` is created sparse, so tombstones and parked documents (which have none) are not in it."""
    db = FakeDatabase()
    await ensure_indexes(db, expected_indexes(Settings()))  # type: ignore[arg-type]
    [claim_index] = [info for info in db["telemetry_buffer"].indexes if info["key"] == {"due_at": 1}]
    assert claim_index.get("sparse") is True
