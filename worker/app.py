"""The worker's lifespan: clients up, consumer loop running, SIGTERM drained, clients down."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.dead_letters.publisher import DeadLetterPublisher
from worker.errors import WorkerError
from worker.kafka.clients import create_consumer, create_producer
from worker.kafka.consumer import GroupConsumer
from worker.kafka.errors import converted
from worker.kafka.failures import kafka_failure
from worker.kafka.probe import KafkaProbe
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.mongo.index_health import check_until_stopped
from worker.mongo.indexes import expected_indexes
from worker.ops.about import startup_facts
from worker.ops.collector import freeze_startup_objects
from worker.ops.health import Health, Liveness
from worker.ops.http import serve_until
from worker.ops.library_logs import route_library_logs
from worker.ops.metrics import track_readiness
from worker.ops.reachability import Reachability, ServerReachability, probe_until_stopped, server_address
from worker.pipeline.batch import BatchProcessor
from worker.pipeline.consumer import ConsumerLoop
from worker.pipeline.priority import WriteGate
from worker.pipeline.routes import Route, build_routes
from worker.retry import RetryPolicy, with_retries
from worker.settings import RouteName, Settings
from worker.startup import StartupError as StartupError  # cli.py maps it to exit 3
from worker.startup import bind_http, wait_for_mongodb
from worker.telemetry.redeliver import redeliver_until_stopped
from worker.telemetry.stats import sample_until_stopped

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_S = 1.0
"""How long each client's close may take at the end (a healthy server's takes milliseconds), so
that hung servers keep the process at most SHUTDOWN_TIMEOUT_S + KAFKA_SESSION_TIMEOUT_MS (the
leave) + 3 x this: 43 s by default, inside Kubernetes' 45 s grace period."""


def _reachability(settings: Settings, *, kafka: bool) -> Reachability:
    mongodb = ServerReachability("mongodb", server_address(settings.mongodb_uri.get_secret_value()))
    if not kafka:
        return Reachability(mongodb)
    kafka_server = ServerReachability("kafka", server_address(settings.kafka_bootstrap_servers))
    return Reachability(mongodb, kafka_server)


def _mongodb_probe(gateway: MongoGateway) -> Callable[[], Awaitable[None]]:
    async def ping() -> None:
        await gateway.connect()

    return ping


async def _start_http(settings: Settings, health: Health, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Bind the probes' port before anything else (StartupError if taken), then serve it."""
    server = await bind_http(health, host=settings.http_host, port=settings.http_port)
    return [] if server is None else [_background(serve_until(server, stop), "http")]


async def _start_kafka(settings: Settings, producer: Any, consumers: Sequence[Any]) -> None:
    try:
        await converted(producer.start())
        for consumer in consumers:
            await converted(consumer.start())
    except WorkerError as exc:
        raise StartupError(kafka_failure(exc, settings).message()) from exc


def routes_for(settings: Settings, gateway: MongoGateway) -> dict[str, Route]:
    """The routing table with the settings' topics and FAIL_CLOSED_ROUTES."""
    topics = {name: settings.topic_for(name) for name in RouteName}
    return build_routes(
        gateway,
        topics=topics,
        dlq_suffix=settings.kafka_dlq_suffix,
        fail_closed=settings.fail_closed_routes,
        priority=settings.route_priority,
    )


def member_routes(settings: Settings, routes: Mapping[str, Route]) -> list[dict[str, Route]]:
    """The routes of each group member: one member per route (ROUTE_ISOLATION), else one for all.

    Every member joins KAFKA_CONSUMER_GROUP with its own consumer, fetches and batch loop, so a
    backlog on one route never waits in front of another's records.
    """
    if not settings.route_isolation:
        return [dict(routes)]
    by_priority = sorted(routes.items(), key=lambda item: item[1].priority)
    return [{topic: route} for topic, route in by_priority]


def batch_processor(
    settings: Settings,
    routes: Mapping[str, Route],
    dead_letters: DeadLetterPublisher,
    gate: WriteGate | None = None,
) -> BatchProcessor:
    """The processor with the settings' retry policy and input limits; the write `gate` is
    shared with the other routes' processors (one of its own if None)."""
    return BatchProcessor(
        routes=routes,
        dead_letters=dead_letters,
        retrying=functools.partial(with_retries, RetryPolicy.from_settings(settings)),
        gate=gate or write_gate(settings),
        max_event_bytes=settings.max_event_bytes,
        max_depth=settings.max_nesting_depth,
    )


def write_gate(settings: Settings) -> WriteGate:
    """The gate the routes' writes share (worker.pipeline.priority), with the settings' holds."""
    return WriteGate(
        settings.mongodb_write_concurrency,
        backlog=settings.kafka_max_batch_records,
        hold_s=settings.route_priority_hold_ms / 1000,
    )


def _report_lag(gate: WriteGate, routes: Mapping[str, Route], lags: Mapping[str, int]) -> None:
    for topic, lag in lags.items():
        gate.report_lag(routes[topic].priority, lag)


def _consumer_loop(
    settings: Settings, routes: Mapping[str, Route], consumer: Any, producer: Any, gate: WriteGate,
    stop: asyncio.Event,
) -> ConsumerLoop:  # fmt: skip
    """The consumer loop of one group member: its routes, dead letters, and the settings' bounds."""
    dead_letters = DeadLetterPublisher(
        producer=producer,
        max_request_bytes=settings.kafka_max_request_bytes,
        truncated_value_bytes=settings.dlq_truncated_value_bytes,
    )
    return ConsumerLoop(
        consumer=GroupConsumer(consumer, offset_reset=settings.kafka_auto_offset_reset),
        processor=batch_processor(settings, routes, dead_letters, gate),
        stop=stop,
        poll_timeout_ms=settings.kafka_poll_timeout_ms,
        max_records=settings.kafka_max_batch_records,
        linger_ms=settings.batch_linger_ms,
        urgent_topics={topic for topic, route in routes.items() if route.priority == 0},
        backoff=RetryPolicy.from_settings(settings).backoff_s,
        report_lag=functools.partial(_report_lag, gate, routes),
    )


def _watch(
    settings: Settings, reachability: Reachability, gateway: MongoGateway, kafka: KafkaProbe | None,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:  # fmt: skip
    """Background tasks: the servers' probes, the index check and (with HTTP) the telemetry_buffer gauges."""
    mongodb_probe = probe_until_stopped(
        reachability["mongodb"], _mongodb_probe(gateway), settings.mongodb_health_interval_s, stop
    )
    index_check = check_until_stopped(
        gateway, stop, interval_s=settings.index_check_interval_s, expected=expected_indexes(settings)
    )
    tasks = [_background(mongodb_probe, "mongodb_probe"), _background(index_check, "index_check")]
    if settings.http_port:  # the gauges are read only through /metrics: with no HTTP, no counting
        stats_every_s = settings.telemetry_buffer_stats_interval_s
        buffer_stats = sample_until_stopped(gateway, interval_s=stats_every_s, stop=stop)
        tasks.append(_background(buffer_stats, "buffer_stats"))
    if kafka is not None:
        kafka_probe = probe_until_stopped(
            reachability["kafka"], kafka, settings.kafka_health_interval_s, stop
        )
        tasks.append(_background(kafka_probe, "kafka_probe"))
    return tasks


def _worker_health(
    settings: Settings, gateway: MongoGateway, consumers: Sequence[Any], reachability: Reachability,
) -> Health:  # fmt: skip
    """What `run`'s probes read; the consumer loops' last poll and the redelivery loop's heartbeat are
    added once they run (before that, waiting for MongoDB, neither can be stuck)."""
    return Health(
        last_poll=None,
        mongodb_ready=lambda: gateway.connected,
        has_assignment=lambda: any(consumer.assignment() for consumer in consumers),
        stuck_after_s=settings.health_stuck_after_s,
        unreachable=reachability.unreachable,
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Bind HTTP, wait for MongoDB, join the group; consume until `stop`, then drain and close.

    Each end is put on an exit stack as its client or task is made, so that the way out runs on
    every path, `serve`'s cancel after SHUTDOWN_TIMEOUT_S included: the helpers cancelled, the
    redelivery batch finished, the group left, the clients closed, `worker_stopped` logged.
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
    group members leave the group, then the producer, the Kafka probe and the gateway close."""
    gateway = gateway_for(settings)
    _close_on_exit(stack, gateway.close)
    kafka_probe = KafkaProbe(settings)
    _close_on_exit(stack, kafka_probe.close)
    producer = create_producer(settings)
    _close_on_exit(stack, producer.stop)
    routes = routes_for(settings, gateway)
    members = member_routes(settings, routes)
    consumers = group_consumers(settings, members)
    leave = functools.partial(_leave_group, consumers, within_s=settings.kafka_session_timeout_ms / 1000)
    stack.push_async_callback(_to_the_end, leave)
    return _Clients(gateway, kafka_probe, producer, routes, members, consumers)


@dataclass(slots=True)
class _Tasks:
    """`run_worker`'s own tasks: the helpers, cancelled at the end; the redelivery loop, let
    finish its batch in hand first."""

    background: list[asyncio.Task[None]] = field(default_factory=list)
    redelivery: asyncio.Task[None] | None = None

    async def finish(self, stop: asyncio.Event, timeout_s: float) -> None:
        for task in self.background:
            task.cancel()
        if self.redelivery is not None:
            await finish_task(self.redelivery, stop, timeout_s)


async def _consume(settings: Settings, stop: asyncio.Event, clients: _Clients, tasks: _Tasks) -> None:
    """Bind HTTP, wait for MongoDB, join the group, start the helpers; consume until `stop`."""
    reachability = _reachability(settings, kafka=True)
    health = _worker_health(settings, clients.gateway, clients.consumers, reachability)
    track_readiness(health.ready)
    tasks.background += await _start_http(settings, health, stop)
    if not await wait_for_mongodb(clients.gateway, settings, stop, reachability["mongodb"]):
        return
    await _start_kafka(settings, clients.producer, clients.consumers)
    reachability["kafka"].answered()
    loops = _member_loops(settings, clients, stop)
    health.last_poll = lambda: min(loop.last_progress for loop in loops)
    tasks.background += _watch(settings, reachability, clients.gateway, clients.kafka_probe, stop)
    if settings.redelivery_enabled:
        redelivery_liveness = Liveness()
        health.loops = {"redelivery": redelivery_liveness}
        tasks.redelivery = asyncio.create_task(
            redeliver_until_stopped(settings, clients.gateway, stop, redelivery_liveness)
        )
    _log_started(settings, clients.routes, members=len(loops))
    await run_together([loop.run() for loop in loops])


def _member_loops(settings: Settings, clients: _Clients, stop: asyncio.Event) -> list[ConsumerLoop]:
    """One consumer loop per group member, subscribed to its routes' topics; one write gate for all."""
    gate = write_gate(settings)
    loops = [
        _consumer_loop(settings, served, consumer, clients.producer, gate, stop)
        for served, consumer in zip(clients.members, clients.consumers, strict=True)
    ]
    for loop, served in zip(loops, clients.members, strict=True):
        loop.subscribe(list(served))
    return loops


def _log_started(settings: Settings, routes: Mapping[str, Route], *, members: int) -> None:
    """The `worker_started` line, once start-up is done."""
    fail_closed = sorted(r.name.value for r in routes.values() if r.policy == "fail-closed")
    frozen = freeze_startup_objects()  # the last step of startup: all made so far lives on
    log.info("worker_started", topics=sorted(routes), group=settings.kafka_consumer_group,
             fail_closed=fail_closed, members=members,
             priority=[route.value for route in settings.route_priority],
             gc_frozen_objects=frozen, **startup_facts(settings))  # fmt: skip


def group_consumers(settings: Settings, members: Sequence[Mapping[str, Route]]) -> list[AIOKafkaConsumer]:
    """One consumer per group member, its client id named after its route when it serves one;
    the members share the replica's fetch budget (KAFKA_FETCH_MAX_BYTES)."""
    share = len(members)
    return [create_consumer(settings, member=_member_name(served), members=share) for served in members]


def _member_name(served: Mapping[str, Route]) -> str | None:
    """The route a group member serves alone (its client id's suffix); None for a member of all."""
    return next(iter(served.values())).name.value if len(served) == 1 else None


async def run_together(work: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run the loops side by side until all return; the first to raise cancels the others and
    its exception is raised (as it is, not in a group: the CLI maps it to an exit code)."""
    tasks = [asyncio.create_task(coroutine) for coroutine in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
    Like `run`, it binds HTTP first and starts the loop only once MongoDB has answered.
    """
    gateway = gateway_for(settings)
    liveness = Liveness()
    reachability = _reachability(settings, kafka=False)
    health = Health(last_poll=None, mongodb_ready=lambda: gateway.connected, has_assignment=lambda: True,
                    stuck_after_s=settings.health_stuck_after_s, loops={"redelivery": liveness},
                    unreachable=reachability.unreachable)  # fmt: skip
    background: list[asyncio.Task[None]] = []
    try:
        background += await _start_http(settings, health, stop)
        if not await wait_for_mongodb(gateway, settings, stop, reachability["mongodb"]):
            return
        background += _watch(settings, reachability, gateway, None, stop)
        await redeliver_until_stopped(settings, gateway, stop, liveness)
    finally:
        for task in background:
            task.cancel()
        await _close(gateway.close)
        log.info("worker_stopped")


def _background(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A helper task whose unexpected end is logged (`background_task_failed`) instead of lost."""
    task = asyncio.create_task(work, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error("background_task_failed", task=name, error=f"{type(exc).__name__}: {exc}")

    task.add_done_callback(report)
    return task


async def _leave_group(consumers: Sequence[Any], *, within_s: float) -> None:
    """Stop every group member at once. One caught in a rebalance the broker does not finish
    (aiokafka waits for its join first) is given up after a session timeout, by which the group
    has expired it anyway: its uncommitted records are re-read by the next owner."""

    async def leave(consumer: Any) -> None:
        try:
            await asyncio.wait_for(consumer.stop(), timeout=within_s)
        except Exception as exc:
            log.warning("close_failed", error=f"{type(exc).__name__}: {exc}", within_s=within_s)

    await asyncio.gather(*(leave(consumer) for consumer in consumers))


def _close_on_exit(stack: contextlib.AsyncExitStack, close: Callable[[], Awaitable[None]]) -> None:
    """Pair a client with its `close` on `stack`: run to its end when the stack unwinds."""
    stack.push_async_callback(_to_the_end, functools.partial(_close, close))


async def _close(close: Callable[[], Awaitable[None]]) -> None:
    """`close()` within CLOSE_TIMEOUT_S; a failure (or the timeout) is logged, never raised."""
    try:
        await asyncio.wait_for(close(), timeout=CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("close_failed", error=f"{type(exc).__name__}: {exc}", within_s=CLOSE_TIMEOUT_S)


async def _to_the_end(step: Callable[[], Awaitable[None]]) -> None:
    """Await `step()` to its end even if this task is cancelled meanwhile (`serve`'s shutdown
    timeout), then pass the cancellation on. `step` bounds its own wait: a leave, a close."""
    running = asyncio.ensure_future(step())
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await running
        raise


async def serve(
    settings: Settings, runner: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]] = run_worker
) -> None:
    """Run the worker (or `runner`) until SIGTERM/SIGINT; then drain within `shutdown_timeout_s`."""
    route_library_logs(interval_s=settings.library_log_interval_s)
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
            log.error("shutdown_timeout", timeout_s=settings.shutdown_timeout_s, waiting_on=_waiting_on())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    stopping.cancel()
    task.result()


def _waiting_on() -> list[str]:
    """What each task still running awaits, outermost to innermost coroutine, e.g.
    `ConsumerLoop.run > GroupConsumer.poll > ...`: what held the shutdown up."""
    places = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        chain: list[str] = []
        coroutine: Any = task.get_coro()
        while (frame := getattr(coroutine, "cr_frame", None)) is not None:
            chain.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
            coroutine = getattr(coroutine, "cr_await", None)
        places.append(f"{task.get_name()}: {' > '.join(chain)}")
    return sorted(places)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    """Stop first, log after: a failing log write must never keep the worker running."""
    stop.set()
    with contextlib.suppress(Exception):
        log.info("shutdown_requested", signal=sig.name)
