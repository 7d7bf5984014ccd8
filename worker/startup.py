"""Start-up steps before any record is consumed: the HTTP port bound, MongoDB answering.

A database the worker has never reached is a configuration error, not an outage: nothing
is consumed (so nothing is dead-lettered or committed) until MongoDB has answered and the
indexes are ensured. Fail-open applies only to outages after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import structlog

from worker.errors import WorkerError
from worker.mongo.gateway import MongoGateway
from worker.mongo.indexes import ensure_indexes, with_retention
from worker.ops.metrics import Health, start_http
from worker.ops.reachability import ServerReachability
from worker.retry import backoff_seconds
from worker.settings import Settings

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The worker cannot start (e.g. Kafka unreachable); the message says why (exit 3)."""


async def bind_http(settings: Settings, health: Health) -> asyncio.Server | None:
    """Bind the probes' HTTP server (None when HTTP_PORT is 0); failing to bind is fatal."""
    if not settings.http_port:
        return None
    try:
        return await start_http(settings.http_host, settings.http_port, health)
    except OSError as exc:
        raise StartupError(
            f"cannot serve HTTP on {settings.http_host}:{settings.http_port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
        ) from exc


async def wait_for_mongodb(
    gateway: MongoGateway, settings: Settings, stop: asyncio.Event, mongodb: ServerReachability
) -> bool:
    """Ping MongoDB and ensure indexes, with backoff, until done (True) or `stop` is set (False).

    Each failed attempt logs `mongodb_client_not_initialized`; after MONGODB_STARTUP_TIMEOUT_S
    (if set) it raises StartupError.
    """
    started, attempt = time.monotonic(), 0
    while not stop.is_set():
        attempt += 1
        try:
            database = await gateway.connect()
            await ensure_indexes(database, with_retention(settings.ttl_days()))
        except WorkerError as exc:
            error = f"{type(exc).__name__}: {exc}"
            mongodb.failed(error)
            delay = _next_wait(settings, attempt, time.monotonic() - started, error)
            log.warning("mongodb_client_not_initialized", uri=settings.mongodb_uri_for_logs(),
                        database=settings.mongodb_database, error=error, attempt=attempt,
                        retry_in_s=round(delay, 3))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            continue
        mongodb.answered()
        log.info("mongodb_connected", uri=settings.mongodb_uri_for_logs(), database=settings.mongodb_database)
        return True
    return False


def _next_wait(settings: Settings, attempt: int, waited_s: float, error: str) -> float:
    """The backoff before the next attempt, cut to what is left of the start-up timeout."""
    delay = backoff_seconds(settings, attempt)
    limit = settings.mongodb_startup_timeout_s
    if limit is None:
        return delay
    if waited_s >= limit:
        raise StartupError(
            f"MongoDB at {settings.mongodb_uri_for_logs()} did not answer within "
            f"MONGODB_STARTUP_TIMEOUT_S={limit:g} s: {error}"
        )
    return min(delay, limit - waited_s)
