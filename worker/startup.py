"""Start-up steps of `run` and `telemetry redeliver` before any record is consumed: the probes'
health and HTTP port, MongoDB answering, the Kafka clients started, the servers watched.

A database the worker has never reached is a configuration error, not an outage: nothing
is consumed (so nothing is dead-lettered or committed) until MongoDB has answered and the
indexes are ensured. Fail-open applies only to outages after that.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import WorkerError
from worker.kafka.diagnose import kafka_failure
from worker.kafka.errors import converted
from worker.kafka.probe import KafkaProbe
from worker.mongo.collections import Document
from worker.mongo.gateway import MongoGateway
from worker.mongo.index_health import check_until_stopped
from worker.mongo.indexes import IndexSpec, ensure_indexes, expected_indexes
from worker.ops.health import Health
from worker.ops.http import serve_until, start_http
from worker.ops.reachability import Reachability, ServerReachability, probe_until_stopped, server_address
from worker.ops.tasks import background
from worker.ops.waiting import wait_for_stop
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.buffer import claim_index_created, date_the_undated
from worker.telemetry.stats import sample_until_stopped

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The worker cannot start (e.g. Kafka unreachable); the message says why (exit 3)."""


def reachability_for(settings: Settings, *, kafka: bool) -> Reachability:
    """MongoDB's reachability, and Kafka's when the process consumes."""
    mongodb = ServerReachability("mongodb", server_address(settings.mongodb_uri.get_secret_value()))
    if not kafka:
        return Reachability(mongodb)
    kafka_server = ServerReachability("kafka", server_address(settings.kafka_bootstrap_servers))
    return Reachability(mongodb, kafka_server)


def health_for(
    settings: Settings, gateway: MongoGateway, reachability: Reachability, consumers: Sequence[Any] = ()
) -> Health:
    """What the probes read: MongoDB answered, the servers reachable, an assignment held by one of
    the `consumers` (none: no assignment to wait for). The loops' heartbeats are added by the caller."""
    return Health(
        last_poll=None,
        mongodb_ready=lambda: gateway.connected,
        has_assignment=lambda: not consumers or any(consumer.assignment() for consumer in consumers),
        stuck_after_s=settings.health_stuck_after_s,
        unreachable=reachability.unreachable,
    )


async def serve_probes(settings: Settings, health: Health, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Bind the probes' port before anything else (StartupError if taken), then serve it until `stop`."""
    server = await bind_http(health, host=settings.http_host, port=settings.http_port)
    return [] if server is None else [background(serve_until(server, stop), "http")]


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


async def start_kafka_clients(settings: Settings, producer: Any, consumers: Sequence[Any]) -> None:
    """Start the producer, then the consumers; a failure is a StartupError saying why."""
    try:
        await converted(producer.start())
        for consumer in consumers:
            await converted(consumer.start())
    except WorkerError as exc:
        raise StartupError(kafka_failure(exc, settings).message()) from exc


def start_watchers(
    settings: Settings, reachability: Reachability, gateway: MongoGateway, kafka: KafkaProbe | None,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:  # fmt: skip
    """Once MongoDB has answered: the servers' probes, the index check and (with HTTP) the
    telemetry_buffer gauges, as helper tasks until `stop`."""
    mongodb_probe = probe_until_stopped(
        reachability["mongodb"], _mongodb_ping(gateway), settings.mongodb_health_interval_s, stop
    )
    index_check = check_until_stopped(
        gateway, stop, interval_s=settings.index_check_interval_s, expected=expected_indexes(settings)
    )
    tasks = [background(mongodb_probe, "mongodb_probe"), background(index_check, "index_check")]
    if settings.http_port:  # the gauges are read only through /metrics: with no HTTP, no counting
        stats_every_s = settings.telemetry_buffer_stats_interval_s
        buffer_stats = sample_until_stopped(gateway, interval_s=stats_every_s, stop=stop)
        tasks.append(background(buffer_stats, "buffer_stats"))
    if kafka is not None:
        kafka_probe = probe_until_stopped(
            reachability["kafka"], kafka, settings.kafka_health_interval_s, stop
        )
        tasks.append(background(kafka_probe, "kafka_probe"))
    return tasks


def _mongodb_ping(gateway: MongoGateway) -> Callable[[], Awaitable[None]]:
    async def ping() -> None:
        await gateway.connect()

    return ping
