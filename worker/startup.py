"""Start-up steps before any record is consumed: the HTTP port bound, MongoDB answering.

A database the worker has never reached is a configuration error, not an outage: nothing
is consumed (so nothing is dead-lettered or committed) until MongoDB has answered and the
indexes are ensured. Fail-open applies only to outages after that.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.mongo.collections import Document
from worker.mongo.gateway import MongoGateway
from worker.mongo.indexes import IndexSpec, ensure_indexes, expected_indexes
from worker.ops.health import Health
from worker.ops.http import start_http
from worker.ops.reachability import ServerReachability
from worker.ops.waiting import wait_for_stop
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.buffer import claim_index_created, date_the_undated

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The worker cannot start (e.g. Kafka unreachable); the message says why (exit 3)."""


async def bind_http(health: Health, *, host: str, port: int) -> asyncio.Server | None:
    """Bind the probes' HTTP server (None when `port` is 0); failing to bind is fatal."""
    if not port:
        return None
    try:
        return await start_http(host, port, health)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else exc
        raise StartupError(f"cannot serve HTTP on {host}:{port}: {reason}") from exc


@dataclass(frozen=True, slots=True)
class MongoStartup:
    """How start-up waits for MongoDB: the indexes to ensure, the backoff, the overall bound."""

    expected_indexes: Mapping[str, tuple[IndexSpec, ...]]
    backoff_s: Callable[[int], float]
    """The wait after failed attempt number n (1-based)."""
    timeout_s: float | None
    """MONGODB_STARTUP_TIMEOUT_S: None waits for ever."""
    uri_for_logs: str
    database: str
    lease_s: float
    """REDELIVERY_LEASE_S: how long a lease an older version holds may still run."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MongoStartup:
        return cls(
            expected_indexes=expected_indexes(settings),
            backoff_s=RetryPolicy.from_settings(settings).backoff_s,
            timeout_s=settings.mongodb_startup_timeout_s,
            uri_for_logs=settings.mongodb_uri_for_logs(),
            database=settings.mongodb_database,
            lease_s=settings.redelivery_lease_s,
        )


async def wait_for_mongodb(
    gateway: MongoGateway, settings: Settings, stop: asyncio.Event, mongodb: ServerReachability
) -> bool:
    """`wait_until_mongodb_ready` as the settings say."""
    return await wait_until_mongodb_ready(gateway, MongoStartup.from_settings(settings), stop, mongodb)


async def wait_until_mongodb_ready(
    gateway: MongoGateway, startup: MongoStartup, stop: asyncio.Event, mongodb: ServerReachability
) -> bool:
    """Ping MongoDB and ensure indexes, with backoff, until done (True) or `stop` is set (False).

    Each failed attempt logs `mongodb_client_not_initialized`; after `startup.timeout_s` (if
    set) it raises StartupError.
    """
    started, attempt = time.monotonic(), 0
    where = {"uri": startup.uri_for_logs, "database": startup.database}
    while not stop.is_set():
        attempt += 1
        try:
            database = await gateway.connect()
            if claim_index_created(await ensure_indexes(database, startup.expected_indexes)):
                await _date_the_undated(database, startup.lease_s)
        except WorkerError as exc:
            error = f"{type(exc).__name__}: {exc}"
            mongodb.failed(error)
            delay = _next_wait(startup, attempt, time.monotonic() - started, error)
            log.warning("mongodb_client_not_initialized", **where, error=error, attempt=attempt,
                        retry_in_s=round(delay, 3))  # fmt: skip
            await wait_for_stop(stop, delay)
            continue
        mongodb.answered()
        log.info("mongodb_connected", **where)
        return True
    return False


async def _date_the_undated(database: AsyncDatabase[Document], lease_s: float) -> None:
    dated = await date_the_undated(database, lease_s=lease_s)
    if dated:
        log.info("telemetry_buffer_dated", documents=dated,
                 hint="pending documents buffered by an older version, now claimable by due_at")  # fmt: skip


def _next_wait(startup: MongoStartup, attempt: int, waited_s: float, error: str) -> float:
    """The backoff before the next attempt, cut to what is left of the start-up timeout."""
    delay = startup.backoff_s(attempt)
    limit = startup.timeout_s
    if limit is None:
        return delay
    if waited_s >= limit:
        raise StartupError(
            f"MongoDB at {startup.uri_for_logs} did not answer within "
            f"MONGODB_STARTUP_TIMEOUT_S={limit:g} s: {error}"
        )
    return min(delay, limit - waited_s)
