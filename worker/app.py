"""The worker's lifespan: clients up, consumer loop running, SIGTERM drained, clients down."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from worker.batch import BatchProcessor
from worker.buffer_stats import sample_until_stopped
from worker.consumer import ConsumerLoop
from worker.dlq import dead_letter_publisher
from worker.errors import WorkerError
from worker.kafka import create_consumer, create_producer
from worker.mongo.gateway import MongoGateway, create_client
from worker.mongo.indexes import ensure_indexes, with_retention
from worker.observability import Health, Liveness, serve_http
from worker.redelivery import redeliver_until_stopped
from worker.retry import backoff_seconds
from worker.routes import build_routes
from worker.settings import Settings

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The worker cannot start (e.g. Kafka unreachable); the message says why."""


async def connect_mongodb(gateway: MongoGateway, settings: Settings, stop: asyncio.Event) -> None:
    """Ping MongoDB and ensure indexes, retrying with backoff until it answers or `stop` is set.

    Until it succeeds, writers log `mongodb_client_not_initialized` and fail as transient.
    """
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            database = await gateway.connect()
            await ensure_indexes(database, with_retention(settings.ttl_days()))
        except WorkerError as exc:
            delay = backoff_seconds(settings, attempt)
            log.warning("mongodb_unavailable", uri=settings.mongodb_uri_for_logs(), error=str(exc),
                        attempt=attempt, retry_in_s=delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            continue
        log.info("mongodb_connected", uri=settings.mongodb_uri_for_logs(), database=settings.mongodb_database)
        return


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Consume until `stop` is set, then finish the batch in hand, commit and close."""
    gateway = MongoGateway(client=create_client(settings), database_name=settings.mongodb_database)
    consumer = create_consumer(settings)
    producer = create_producer(settings)
    routes = build_routes(settings, gateway)
    background = [asyncio.create_task(connect_mongodb(gateway, settings, stop))]
    redelivery: asyncio.Task[None] | None = None
    try:
        try:
            await producer.start()
            await consumer.start()
        except KafkaError as exc:
            raise StartupError(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        processor = BatchProcessor(
            routes=routes, dead_letters=dead_letter_publisher(producer, settings), settings=settings
        )
        loop = ConsumerLoop(consumer=consumer, processor=processor, settings=settings, stop=stop)
        loop.subscribe(list(routes))
        redelivery_liveness = Liveness()
        if settings.http_port:
            health = Health(
                last_poll=lambda: loop.last_progress,
                mongodb_ready=lambda: gateway.connected,
                has_assignment=lambda: bool(consumer.assignment()),
                stuck_after_s=settings.health_stuck_after_s,
                loops={"redelivery": redelivery_liveness} if settings.redelivery_enabled else {},
            )
            background.append(_background(serve_http(settings.http_port, health, stop), "http"))
            background.append(_background(sample_until_stopped(gateway, settings, stop), "buffer_stats"))
        if settings.redelivery_enabled:
            redelivery = asyncio.create_task(
                redeliver_until_stopped(settings, gateway, stop, redelivery_liveness)
            )
        fail_closed = sorted(r.name.value for r in routes.values() if r.policy == "fail-closed")
        log.info(
            "worker_started",
            topics=sorted(routes),
            group=settings.kafka_consumer_group,
            fail_closed=fail_closed,
        )
        await loop.run()
    finally:
        for task in background:
            task.cancel()
        if redelivery is not None:
            await finish_task(redelivery, stop, settings.shutdown_timeout_s)
        await _close_all(consumer.stop, producer.stop, gateway.close)
        log.info("worker_stopped")


async def finish_task(task: asyncio.Task[None], stop: asyncio.Event, timeout_s: float) -> None:
    """After `stop`, let `task` finish its work in hand (at most `timeout_s`); else cancel it.

    A cancelled redelivery batch leaves its claims to lapse with their leases.
    """
    try:
        if stop.is_set():
            await asyncio.wait({task}, timeout=timeout_s)
    finally:
        task.cancel()  # a no-op once it has finished
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # we are the ones being cancelled
            raise
    except Exception as exc:
        log.error("background_task_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)


async def run_redelivery(settings: Settings, stop: asyncio.Event) -> None:
    """`redeliver`: the telemetry redelivery loop alone, until `stop` is set.

    With HTTP_PORT set it serves /metrics, /healthz (the loop's liveness) and /readyz (MongoDB).
    """
    gateway = MongoGateway(client=create_client(settings), database_name=settings.mongodb_database)
    liveness = Liveness()
    background = [asyncio.create_task(connect_mongodb(gateway, settings, stop))]
    if settings.http_port:
        health = Health(
            last_poll=None,
            mongodb_ready=lambda: gateway.connected,
            has_assignment=lambda: True,
            stuck_after_s=settings.health_stuck_after_s,
            loops={"redelivery": liveness},
        )
        background.append(_background(serve_http(settings.http_port, health, stop), "http"))
        background.append(_background(sample_until_stopped(gateway, settings, stop), "buffer_stats"))
    try:
        await redeliver_until_stopped(settings, gateway, stop, liveness)
    finally:
        for task in background:
            task.cancel()
        await _close_all(gateway.close)
        log.info("worker_stopped")


def _background(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A helper task whose unexpected end is logged (`background_task_failed`) instead of lost."""
    task = asyncio.create_task(work, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error("background_task_failed", task=name, error=f"{type(exc).__name__}: {exc}")

    task.add_done_callback(report)
    return task


async def _close_all(*closers: Callable[[], Awaitable[None]]) -> None:
    for close in closers:
        try:
            await close()
        except Exception as exc:
            log.warning("close_failed", error=f"{type(exc).__name__}: {exc}")


async def serve(
    settings: Settings, runner: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]] = run_worker
) -> None:
    """Run the worker (or `runner`) until SIGTERM/SIGINT; then drain within `shutdown_timeout_s`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    task = asyncio.create_task(runner(settings, stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=settings.shutdown_timeout_s)
        except TimeoutError:
            log.error("shutdown_timeout", timeout_s=settings.shutdown_timeout_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    stopping.cancel()
    task.result()


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("shutdown_requested", signal=sig.name)
    stop.set()
