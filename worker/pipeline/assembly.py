"""The consumer side made from Settings: the routing table, the group members (one per route with
ROUTE_ISOLATION) and their consumers, the write gate they share, each one's processor and loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer

from worker.dead_letters.publisher import DeadLetterPublisher
from worker.kafka.clients import create_consumer
from worker.kafka.consumer import GroupConsumer
from worker.mongo.gateway import MongoGateway
from worker.pipeline.batch import BatchProcessor
from worker.pipeline.consumer_loop import ConsumerLoop
from worker.pipeline.routes import Route, build_routes
from worker.pipeline.write_gate import WriteGate
from worker.retry import RetryPolicy, with_retries
from worker.settings import RouteName, Settings


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


def group_consumers(settings: Settings, members: Sequence[Mapping[str, Route]]) -> list[AIOKafkaConsumer]:
    """One consumer per group member, its client id named after its route when it serves one;
    the members share the replica's fetch budget (KAFKA_FETCH_MAX_BYTES)."""
    share = len(members)
    return [create_consumer(settings, member=_member_name(served), members=share) for served in members]


def _member_name(served: Mapping[str, Route]) -> str | None:
    """The route a group member serves alone (its client id's suffix); None for a member of all."""
    return next(iter(served.values())).name.value if len(served) == 1 else None


def member_loops(
    settings: Settings,
    members: Sequence[Mapping[str, Route]],
    consumers: Sequence[Any],
    producer: Any,
    stop: asyncio.Event,
) -> list[ConsumerLoop]:
    """One consumer loop per group member, subscribed to its routes' topics; one write gate for all."""
    gate = write_gate(settings)
    loops = [
        _consumer_loop(settings, served, consumer, producer, gate, stop)
        for served, consumer in zip(members, consumers, strict=True)
    ]
    for loop, served in zip(loops, members, strict=True):
        loop.subscribe(list(served))
    return loops


def write_gate(settings: Settings) -> WriteGate:
    """The gate the routes' writes share (worker.pipeline.write_gate), with the settings' holds."""
    return WriteGate(
        settings.mongodb_write_concurrency,
        backlog=settings.kafka_max_batch_records,
        hold_s=settings.route_priority_hold_ms / 1000,
    )


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


def _report_lag(gate: WriteGate, routes: Mapping[str, Route], lags: Mapping[str, int]) -> None:
    for topic, lag in lags.items():
        gate.report_lag(routes[topic].priority, lag)
