"""The worker's life: `serve` runs it until SIGTERM/SIGINT and bounds the drain; `run_worker` opens the
clients, starts up, consumes and closes; `run_redelivery` runs the redelivery loop alone.

Whatever a run opens is paired on an exit stack with its end as it is made, so that the way out
runs on every path, `serve`'s cancel after SHUTDOWN_TIMEOUT_S included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.kafka.clients import create_producer
from worker.kafka.probe import KafkaProbe
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.ops.about import startup_facts
from worker.ops.gc_tuning import freeze_startup_objects
from worker.ops.health import Liveness
from worker.ops.library_logs import route_library_logs
from worker.ops.metrics import track_readiness
from worker.ops.signals import StopOnSignals
from worker.ops.tasks import close_on_exit, finish_task, run_together, waiting_on
from worker.pipeline.assembly import group_consumers, member_loops, member_routes, routes_for
from worker.pipeline.routes import Route
from worker.settings import Settings
from worker.startup import StartupError as StartupError  # cli.py maps it to exit 3
from worker.startup import (
    health_for,
    reachability_for,
    serve_probes,
    start_kafka_clients,
    start_watchers,
    wait_for_mongodb,
)
from worker.telemetry.assembly import redeliver_until_stopped

log = structlog.get_logger(__name__)

Runner = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]

CLOSE_TIMEOUT_S = 1.0
"""How long each client's close may take at the end (a healthy server's takes milliseconds), so
that hung servers keep the process at most SHUTDOWN_TIMEOUT_S + KAFKA_SESSION_TIMEOUT_MS (the
leave) + 3 x this: 43 s by default, inside Kubernetes' 45 s grace period."""


async def serve(settings: Settings, runner: Runner | None = None) -> None:
    """Run the worker (or `runner`) until SIGTERM/SIGINT; then drain within `shutdown_timeout_s`."""
    route_library_logs(interval_s=settings.library_log_interval_s)
    stop = asyncio.Event()
    with StopOnSignals(stop, cancel_on_repeat=False):  # the drain is bounded: a repeat changes nothing
        task = asyncio.create_task((runner or run_worker)(settings, stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await _drain(task, settings.shutdown_timeout_s)
        stopping.cancel()
    task.result()


async def _drain(task: asyncio.Task[None], timeout_s: float) -> None:
    """Let `task` finish within `timeout_s`; past it, log what it still waits on and cancel it."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout_s)
    except TimeoutError:
        log.error("shutdown_timeout", timeout_s=timeout_s, waiting_on=waiting_on())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Bind HTTP, wait for MongoDB, join the group; consume until `stop`, then drain and close.

    On the way out: the helpers cancelled, the redelivery batch finished, the group left, the
    clients closed, `worker_stopped` logged.
    """
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.info, "worker_stopped")
        clients = _open_clients(settings, stack)
        tasks = _Tasks()
        stack.push_async_callback(tasks.finish, stop, settings.shutdown_timeout_s)
        await _consume(settings, stop, clients, tasks)


@dataclass(frozen=True, slots=True)
class _Clients:
    """What `run_worker` makes from the settings before start-up; `_open_clients` pairs each with its end."""

    gateway: MongoGateway
    kafka_probe: KafkaProbe
    producer: AIOKafkaProducer
    routes: dict[str, Route]
    members: list[dict[str, Route]]
    consumers: list[AIOKafkaConsumer]


def _open_clients(settings: Settings, stack: contextlib.AsyncExitStack) -> _Clients:
    """Make the clients, each paired on `stack` with its end (run last made, first ended): the
    group members leave the group, then the producer, the Kafka probe and the gateway close.

    The members leave at once. One caught in a rebalance the broker does not finish (aiokafka
    waits for its join first) is given up after a session timeout, by which the group has
    expired it anyway: its uncommitted records are re-read by the next owner."""
    gateway = gateway_for(settings)
    close_on_exit(stack, gateway.close, within_s=CLOSE_TIMEOUT_S)
    kafka_probe = KafkaProbe(settings)
    close_on_exit(stack, kafka_probe.close, within_s=CLOSE_TIMEOUT_S)
    producer = create_producer(settings)
    close_on_exit(stack, producer.stop, within_s=CLOSE_TIMEOUT_S)
    routes = routes_for(settings, gateway)
    members = member_routes(settings, routes)
    consumers = group_consumers(settings, members)
    close_on_exit(stack, *(c.stop for c in consumers), within_s=settings.kafka_session_timeout_ms / 1000)
    return _Clients(gateway, kafka_probe, producer, routes, members, consumers)


@dataclass(slots=True)
class _Tasks:
    """A run's own tasks: the helpers, cancelled at the end; the redelivery loop, let finish its
    batch in hand first (within SHUTDOWN_TIMEOUT_S)."""

    background: list[asyncio.Task[None]] = field(default_factory=list)
    redelivery: asyncio.Task[None] | None = None

    async def finish(self, stop: asyncio.Event, timeout_s: float) -> None:
        for task in self.background:
            task.cancel()
        if self.redelivery is not None:
            await finish_task(self.redelivery, stop, timeout_s)


async def _consume(settings: Settings, stop: asyncio.Event, clients: _Clients, tasks: _Tasks) -> None:
    """Bind HTTP, wait for MongoDB, join the group, start the helpers; consume until `stop`."""
    reachability = reachability_for(settings, kafka=True)
    health = health_for(settings, clients.gateway, reachability, clients.consumers)
    track_readiness(health.ready)
    tasks.background += await serve_probes(settings, health, stop)
    if not await wait_for_mongodb(clients.gateway, settings, stop, reachability["mongodb"]):
        return
    await start_kafka_clients(settings, clients.producer, clients.consumers)
    reachability["kafka"].answered()
    loops = member_loops(settings, clients.members, clients.consumers, clients.producer, stop)
    health.last_poll = lambda: min(loop.last_progress for loop in loops)
    tasks.background += start_watchers(settings, reachability, clients.gateway, clients.kafka_probe, stop)
    if settings.redelivery_enabled:  # its heartbeat joins the probes now (waiting for MongoDB, none beat)
        liveness = Liveness()
        health.loops = {"redelivery": liveness}
        redelivery = redeliver_until_stopped(settings, clients.gateway, stop, liveness)
        tasks.redelivery = asyncio.create_task(redelivery)
    _log_started(settings, clients.routes, members=len(loops))
    await run_together([loop.run() for loop in loops])


def _log_started(settings: Settings, routes: Mapping[str, Route], *, members: int) -> None:
    """The `worker_started` line, once start-up is done."""
    fail_closed = sorted(r.name.value for r in routes.values() if r.policy == "fail-closed")
    frozen = freeze_startup_objects()  # the last step of startup: all made so far lives on
    log.info("worker_started", topics=sorted(routes), group=settings.kafka_consumer_group,
             fail_closed=fail_closed, members=members,
             priority=[route.value for route in settings.route_priority],
             gc_frozen_objects=frozen, **startup_facts(settings))  # fmt: skip


async def run_redelivery(settings: Settings, stop: asyncio.Event) -> None:
    """`redeliver`: the telemetry redelivery loop alone, until `stop` is set.

    With HTTP_PORT set it serves /metrics, /healthz (the loop's liveness) and /readyz (MongoDB).
    Like `run`, it binds HTTP first and starts the loop only once MongoDB has answered.
    """
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.info, "worker_stopped")
        gateway = gateway_for(settings)
        close_on_exit(stack, gateway.close, within_s=CLOSE_TIMEOUT_S)
        tasks = _Tasks()
        stack.push_async_callback(tasks.finish, stop, settings.shutdown_timeout_s)
        reachability = reachability_for(settings, kafka=False)
        health = health_for(settings, gateway, reachability)
        liveness = Liveness()
        health.loops = {"redelivery": liveness}
        tasks.background += await serve_probes(settings, health, stop)
        if not await wait_for_mongodb(gateway, settings, stop, reachability["mongodb"]):
            return
        tasks.background += start_watchers(settings, reachability, gateway, None, stop)
        await redeliver_until_stopped(settings, gateway, stop, liveness)
