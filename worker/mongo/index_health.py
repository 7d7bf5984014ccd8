"""The periodic index check: expected indexes missing or conflicting, per collection, as gauges.

`run` calls `check_until_stopped` when INDEX_CHECK_INTERVAL_S is above 0. A check that cannot
read the indexes logs one `index_check_failed` warning and leaves the gauges as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.mongo.gateway import MongoGateway
from worker.mongo.indexes import CollectionIndexReport, IndexSpec, inspect_collection
from worker.ops.metrics import INDEX_CHECK_TIMESTAMP, INDEX_CONFLICTS, INDEXES_MISSING
from worker.ops.waiting import wait_for_stop

log = structlog.get_logger(__name__)


def publish(reports: list[CollectionIndexReport], now: float) -> None:
    """Set the gauges from one complete check."""
    for report in reports:
        INDEXES_MISSING.labels(collection=report.collection).set(len(report.missing))
        INDEX_CONFLICTS.labels(collection=report.collection).set(len(report.conflicts))
    INDEX_CHECK_TIMESTAMP.set(now)


async def check_once(
    database: AsyncDatabase[Any], expected: Mapping[str, tuple[IndexSpec, ...]]
) -> list[CollectionIndexReport] | None:
    """Compare every collection's indexes with `expected` and publish; None when it could not."""
    try:
        reports = [await inspect_collection(database, name, specs) for name, specs in expected.items()]
    except WorkerError as exc:
        log.warning("index_check_failed", error=f"{type(exc).__name__}: {exc}",
                    hint="the index gauges keep their last values")  # fmt: skip
        return None
    publish(reports, time.time())
    unhealthy = [report for report in reports if not report.healthy]
    for report in unhealthy:
        log.warning("index_missing", collection=report.collection,
                    missing=[spec.describe() for spec in report.missing],
                    conflicts=len(report.conflicts), hint="persistence-worker indexes ensure")  # fmt: skip
    return reports


async def check_until_stopped(
    gateway: MongoGateway,
    stop: asyncio.Event,
    *,
    interval_s: float,
    expected: Mapping[str, tuple[IndexSpec, ...]],
) -> None:
    """Check every `interval_s` once MongoDB has answered, until `stop`; 0 means never."""
    if interval_s <= 0:
        return
    while not stop.is_set():
        if gateway.connected:
            await check_once(gateway.database(), expected)
        await wait_for_stop(stop, interval_s)
