"""The indexes each collection must have (from the persistence guide), and their upkeep.

Indexes are compared by key pattern and options (unique, TTL), never by name: servers name them
differently. `sparse` is set when an index is created and not compared: nx-27017, a stand-in
server, accepts it but leaves it out of listIndexes. An existing index with the right keys but
other options is reported as a conflict and left in place; dropping it is an operator's decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from worker.mongo.collections import INCIDENTS, TELEMETRY_BUFFER, VALIDATION_AUDIT, WORKFLOW_RESULTS
from worker.mongo.errors import converting

if TYPE_CHECKING:
    from worker.settings import Settings

log = structlog.get_logger(__name__)

Keys = tuple[tuple[str, int | str], ...]


@dataclass(frozen=True, slots=True)
class IndexSpec:
    keys: Keys
    unique: bool = False
    expire_after_seconds: int | None = None
    sparse: bool = field(default=False, compare=False)
    """Only documents that have the first key are in the index (see the module's docstring)."""

    def describe(self) -> str:
        keys = ", ".join(f"{name}:{direction}" for name, direction in self.keys)
        options = " unique" if self.unique else ""
        options += " sparse" if self.sparse else ""
        if self.expire_after_seconds is not None:
            options += f" ttl={self.expire_after_seconds}s"
        return f"({keys}){options}"


def _asc(*names: str) -> IndexSpec:
    return IndexSpec(keys=tuple((name, 1) for name in names))


EXPECTED_INDEXES: Mapping[str, tuple[IndexSpec, ...]] = {
    VALIDATION_AUDIT: (
        _asc("plan_id"),
        _asc("workflow_id"),
        _asc("timestamp"),
        _asc("plan_id", "timestamp"),
    ),
    WORKFLOW_RESULTS: (
        IndexSpec(keys=(("workflow_id", 1),), unique=True),
        _asc("plan_id"),
        _asc("status"),
        _asc("consolidated_at"),
        _asc("status", "consolidated_at"),
    ),
    INCIDENTS: (
        _asc("workflow_id"),
        _asc("type"),
        _asc("severity"),
        _asc("timestamp"),
        _asc("severity", "timestamp"),
    ),
    TELEMETRY_BUFFER: (
        _asc("correlation.workflow_id"),
        _asc("buffered_at"),
        _asc("retry_count"),
        _asc("retry_count", "buffered_at"),
        # The redelivery claim: pending documents only (`due_at` exists), earliest due first. Sparse, so
        # tombstones and parked documents are not in it and a claim's cost does not grow with them.
        IndexSpec(keys=(("due_at", 1),), sparse=True),
        # Pending and parked counts, the oldest pending document, replay's choice: led by `state`, so
        # tombstones (`state: "delivered"`) are outside the bounds of `{state: null, parked: ...}`.
        _asc("state", "parked", "buffered_at"),
        # The purge of delivered tombstones (`delivered_at` before the window), on the loop's schedule.
        # Not a TTL index: nx-27017, a stand-in, runs a TTL purge that reads the whole collection
        # before every command on it, which would make every claim's cost grow with the tombstones.
        _asc("delivered_at"),
    ),
}


# The date field each collection's retention (TTL) applies to.
TTL_FIELDS: Mapping[str, str] = {
    VALIDATION_AUDIT: "timestamp",
    WORKFLOW_RESULTS: "consolidated_at",
    INCIDENTS: "timestamp",
    TELEMETRY_BUFFER: "buffered_at",
}


def expected_indexes(settings: Settings) -> dict[str, tuple[IndexSpec, ...]]:
    """The indexes `settings` asks for: the guide's, with the retention TTLs it sets."""
    return with_retention(settings.ttl_days())


def with_retention(ttl_days: Mapping[str, int | None]) -> dict[str, tuple[IndexSpec, ...]]:
    """EXPECTED_INDEXES where the date index of each collection with a TTL expires documents."""
    expected = {}
    for collection, specs in EXPECTED_INDEXES.items():
        days = ttl_days.get(collection)
        date_keys = ((TTL_FIELDS[collection], 1),)
        expected[collection] = tuple(
            dataclasses.replace(spec, expire_after_seconds=days * 86_400)
            if days is not None and spec.keys == date_keys
            else spec
            for spec in specs
        )
    return expected


@dataclass(slots=True)
class CollectionIndexReport:
    collection: str
    present: list[IndexSpec] = field(default_factory=list)
    missing: list[IndexSpec] = field(default_factory=list)
    created: list[IndexSpec] = field(default_factory=list)
    updated: list[IndexSpec] = field(default_factory=list)
    """TTL changed in place with collMod."""
    conflicts: list[tuple[IndexSpec, IndexSpec]] = field(default_factory=list)
    """(expected, found): same keys, other options."""

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.conflicts


def _direction(value: object) -> int | str:
    """1 / -1 (servers may answer 1.0), or the kind of a special index ("text", "hashed")."""
    return int(value) if isinstance(value, int | float) else str(value)


def _spec_of(info: Mapping[str, Any]) -> IndexSpec:
    keys = tuple((str(name), _direction(direction)) for name, direction in info["key"].items())
    ttl = info.get("expireAfterSeconds")
    return IndexSpec(
        keys=keys,
        unique=bool(info.get("unique", False)),
        expire_after_seconds=None if ttl is None else int(ttl),
        sparse=bool(info.get("sparse", False)),
    )


async def inspect_collection(
    database: AsyncDatabase[Any], collection: str, expected: tuple[IndexSpec, ...]
) -> CollectionIndexReport:
    """Compare the collection's indexes with `expected` (the `_id` index is implicit)."""
    with converting():
        cursor = await database[collection].list_indexes()
        found = {spec.keys: spec for spec in map(_spec_of, await cursor.to_list())}
    report = CollectionIndexReport(collection=collection)
    for spec in expected:
        existing = found.get(spec.keys)
        if existing is None:
            report.missing.append(spec)
        elif existing != spec:
            report.conflicts.append((spec, existing))
        else:
            report.present.append(spec)
    return report


async def ensure_indexes(
    database: AsyncDatabase[Any],
    expected: Mapping[str, tuple[IndexSpec, ...]] = EXPECTED_INDEXES,
) -> list[CollectionIndexReport]:
    """Create every missing index; report conflicts without touching them. Idempotent."""
    reports = []
    for collection, specs in expected.items():
        report = await inspect_collection(database, collection, specs)
        for spec in report.missing:
            await _create(database, collection, spec)
            report.created.append(spec)
        report.missing.clear()
        for wanted, found in list(report.conflicts):
            if ttl_only_differs(wanted, found):
                await _set_ttl(database, collection, wanted)
                report.conflicts.remove((wanted, found))
                report.updated.append(wanted)
        for wanted, found in report.conflicts:
            log.error(
                "index_conflict",
                collection=collection,
                expected=wanted.describe(),
                found=found.describe(),
                hint="drop or modify the existing index by hand, then run `indexes ensure`",
            )
        if report.created:
            log.info("indexes_created", collection=collection, indexes=[s.describe() for s in report.created])
        reports.append(report)
    return reports


def ttl_only_differs(wanted: IndexSpec, found: IndexSpec) -> bool:
    """A TTL to set or change (collMod can); removing a TTL is left to an operator."""
    same_otherwise = wanted.keys == found.keys and wanted.unique == found.unique
    return same_otherwise and wanted.expire_after_seconds is not None


async def _set_ttl(database: AsyncDatabase[Any], collection: str, spec: IndexSpec) -> None:
    index = {"keyPattern": dict(spec.keys), "expireAfterSeconds": spec.expire_after_seconds}
    with converting():
        await database.command("collMod", collection, index=index)
    log.info("index_ttl_updated", collection=collection, index=spec.describe())


async def _create(database: AsyncDatabase[Any], collection: str, spec: IndexSpec) -> None:
    options: dict[str, Any] = {"unique": spec.unique} if spec.unique else {}
    if spec.sparse:
        options["sparse"] = True
    if spec.expire_after_seconds is not None:
        options["expireAfterSeconds"] = spec.expire_after_seconds
    with converting():
        await database[collection].create_index(list(spec.keys), **options)
