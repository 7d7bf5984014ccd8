"""The telemetry_buffer gauges: documents pending, documents parked, age of the oldest pending one.

Sampled every TELEMETRY_BUFFER_STATS_INTERVAL_S by `run` and by `redeliver`, when they serve
/metrics (HTTP_PORT not 0). "Pending" is every document the redelivery loop may still deliver (not parked,
whether due, waiting for its backoff or claimed right now). The three queries are answered
by the index `(state, parked, buffered_at)`: equalities on `state` and `parked` (which leave the
tombstones out of the bounds), then `buffered_at` in index order. A failed sample logs one
`telemetry_buffer_stats_failed` warning and leaves the gauges at their last values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.mongo.collections import TELEMETRY_BUFFER, Document
from worker.mongo.errors import converted
from worker.mongo.gateway import MongoGateway
from worker.ops.metrics import BUFFER_OLDEST_PENDING_AGE, BUFFER_PARKED, BUFFER_PENDING
from worker.ops.waiting import wait_for_stop
from worker.telemetry.buffer import OLDEST_FIRST, TOMBSTONE_FREE, stored_moment

log = structlog.get_logger(__name__)


# Parking sets `parked: true` and nothing sets it false (worker.telemetry.buffer): pending is "absent";
# delivered tombstones (kept for the dedup window) are neither pending nor parked. Both name `state`
# (null: tombstones have no `parked`, so it selects the same documents) because an index serves only
# a filter on its leading field: without it the count read the whole collection (seen on SecantusDB).
PENDING: Mapping[str, Any] = {"parked": None, **TOMBSTONE_FREE}
PARKED: Mapping[str, Any] = {"parked": True, **TOMBSTONE_FREE}


@dataclass(frozen=True, slots=True)
class BufferStats:
    pending: int
    parked: int
    oldest_pending_age_s: float
    """0 when nothing is pending."""


def age_s(buffered_at: object, now: datetime) -> float:
    """Seconds since `buffered_at` (an aware or naive-UTC datetime, or ISO text), never negative."""
    moment = stored_moment(buffered_at)
    if moment is None:
        raise TypeError(f"buffered_at is not a date: {buffered_at!r}")
    return max((now - moment).total_seconds(), 0.0)


async def sample(database: AsyncDatabase[Document], now: datetime | None = None) -> BufferStats:
    """Count pending and parked documents and find the oldest pending one; PyMongo errors converted."""
    collection = database[TELEMETRY_BUFFER]
    pending = await converted(collection.count_documents(PENDING))
    parked = await converted(collection.count_documents(PARKED))
    oldest = await converted(collection.find_one(PENDING, {"_id": 0, "buffered_at": 1}, sort=OLDEST_FIRST))
    moment = now or datetime.now(UTC)
    age = age_s(oldest["buffered_at"], moment) if oldest else 0.0
    return BufferStats(pending=pending, parked=parked, oldest_pending_age_s=age)


def publish(stats: BufferStats) -> None:
    BUFFER_PENDING.set(stats.pending)
    BUFFER_PARKED.set(stats.parked)
    BUFFER_OLDEST_PENDING_AGE.set(stats.oldest_pending_age_s)


async def sample_and_publish(database: AsyncDatabase[Document]) -> BufferStats | None:
    """One sample into the gauges; on failure one warning line, and the gauges keep their values."""
    try:
        stats = await sample(database)
    except (WorkerError, KeyError, TypeError, ValueError) as exc:
        log.warning("telemetry_buffer_stats_failed", error=f"{type(exc).__name__}: {exc}",
                    hint="the telemetry_buffer gauges keep their last values")  # fmt: skip
        return None
    publish(stats)
    log.debug("telemetry_buffer_sampled", pending=stats.pending, parked=stats.parked,
              oldest_pending_age_s=round(stats.oldest_pending_age_s, 3))  # fmt: skip
    return stats


async def sample_until_stopped(gateway: MongoGateway, *, interval_s: float, stop: asyncio.Event) -> None:
    """Sample every `interval_s` once MongoDB has answered, until `stop`."""
    while not stop.is_set():
        if gateway.connected:
            await sample_and_publish(gateway.database())
        await wait_for_stop(stop, interval_s)
