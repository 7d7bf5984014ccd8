"""Specification of the periodic index check (worker.mongo.index_health) without a server."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs

from tests.support.mongo import FakeCollection, FakeDatabase
from worker.mongo.index_health import check_once, check_until_stopped
from worker.mongo.indexes import EXPECTED_INDEXES


def _all_expected() -> FakeDatabase:
    collections = {}
    for name, specs in EXPECTED_INDEXES.items():
        indexes = [{"key": {"_id": 1}}]
        indexes += [{"key": dict(spec.keys), "unique": spec.unique} for spec in specs]
        collections[name] = FakeCollection(indexes=indexes)
    return FakeDatabase(collections)


def missing(collection: str) -> float | None:
    return REGISTRY.get_sample_value("persistence_indexes_missing", {"collection": collection})


async def test_a_dropped_index_is_counted_missing_on_its_collection() -> None:
    """An expected index absent from a collection sets that collection's missing gauge to 1, others to 0."""
    database = _all_expected()
    database["incidents"].indexes = [i for i in database["incidents"].indexes if i["key"] != {"severity": 1}]
    with capture_logs() as logs:
        reports = await check_once(database, EXPECTED_INDEXES)  # type: ignore[arg-type]
    assert reports is not None
    assert missing("incidents") == 1
    assert missing("workflow_results") == 0
    assert [e["collection"] for e in logs if e["event"] == "index_missing"] == ["incidents"]


async def test_a_complete_set_of_indexes_reads_zero_everywhere() -> None:
    """With every expected index present each collection's missing gauge is 0 and the check time is set."""
    assert await check_once(_all_expected(), EXPECTED_INDEXES) is not None  # type: ignore[arg-type]
    assert all(missing(name) == 0 for name in EXPECTED_INDEXES)
    assert (REGISTRY.get_sample_value("persistence_index_check_last_success_timestamp_seconds") or 0) > 0


async def test_an_unreadable_server_leaves_the_gauges_as_they_were() -> None:
    """A MongoDB error logs index_check_failed, returns None, and keeps the previous gauge values."""
    database = _all_expected()
    database["incidents"].indexes = database["incidents"].indexes[:1]
    await check_once(database, EXPECTED_INDEXES)  # type: ignore[arg-type]
    before = missing("incidents")
    database["validation_audit"].error = AutoReconnect("down")
    with capture_logs() as logs:
        assert await check_once(database, EXPECTED_INDEXES) is None  # type: ignore[arg-type]
    assert missing("incidents") == before
    assert [e["event"] for e in logs] == ["index_check_failed"]


async def test_interval_zero_turns_the_check_off() -> None:
    """INDEX_CHECK_INTERVAL_S=0: the loop returns at once without reading MongoDB."""

    class NoGateway:
        connected = True

        def database(self) -> Any:
            raise AssertionError("the check must not run")

    await asyncio.wait_for(
        check_until_stopped(NoGateway(), asyncio.Event(), interval_s=0, expected={}),  # type: ignore[arg-type]
        timeout=1,
    )
