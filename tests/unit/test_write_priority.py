"""Specification of route priority at MongoDB (ROUTE_PRIORITY): a route's write waits while a
route before it has a chunk in hand; the first route never waits."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.demo.events import EventFactory
from tests.unit.test_batch import Document, FakeDeadLetters, FakeWriter, good_record, make_pipeline
from worker.app import batch_processor, member_routes
from worker.kafka.consumer import TopicPartition
from worker.mongo.writers import WriteOutcome
from worker.pipeline.batch import WRITE_CHUNK, BatchProcessor
from worker.pipeline.priority import WritePriority
from worker.settings import RouteName, Settings

FIRST, SECOND, THIRD = 0, 1, 2


async def settles(awaitable: asyncio.Future[None] | asyncio.Task[None], within: float = 0.05) -> bool:
    """True when `awaitable` is done within `within` seconds (it is not cancelled either way)."""
    done, _ = await asyncio.wait({awaitable}, timeout=within)
    return bool(done)


async def test_the_first_route_never_waits_whatever_is_in_hand_below_it() -> None:
    priority = WritePriority()
    priority.started(SECOND)
    priority.started(THIRD)
    assert await settles(asyncio.ensure_future(priority.wait_turn(FIRST, "incidents")))


async def test_a_lower_route_waits_until_the_higher_routes_chunk_is_finished() -> None:
    priority = WritePriority()
    priority.started(FIRST)
    turn = asyncio.ensure_future(priority.wait_turn(SECOND, "results"))
    assert not await settles(turn)
    priority.finished(FIRST)
    assert await settles(turn)


async def test_a_route_waits_for_every_chunk_in_hand_above_it_but_not_below() -> None:
    priority = WritePriority()
    priority.started(FIRST)
    priority.started(FIRST)
    priority.started(THIRD)
    turn = asyncio.ensure_future(priority.wait_turn(SECOND, "results"))
    priority.finished(FIRST)
    assert not await settles(turn), "one chunk of the first route is still in hand"
    priority.finished(FIRST)
    assert await settles(turn), "the third route's chunk must not hold the second back"


async def test_a_cancelled_waiter_does_not_hold_back_the_others() -> None:
    priority = WritePriority()
    priority.started(FIRST)
    cancelled = asyncio.ensure_future(priority.wait_turn(SECOND, "results"))
    waiting = asyncio.ensure_future(priority.wait_turn(THIRD, "telemetry"))
    await asyncio.sleep(0)
    cancelled.cancel()
    priority.finished(FIRST)
    assert await settles(waiting)
    assert priority.ahead_of(THIRD) is False


@dataclass
class TimedWriter(FakeWriter):
    """A writer whose every write takes `seconds`, noting when each started and ended."""

    seconds: float = 0.05
    spans: list[tuple[float, float]] = field(default_factory=list)

    async def write(self, documents: Sequence[Document]) -> WriteOutcome:
        started = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.spans.append((started, time.monotonic()))
        return await super().write(documents)


def route_processor(
    settings: Settings, name: RouteName, writer: FakeWriter, shared: WritePriority
) -> tuple[BatchProcessor, int]:
    """A processor for route `name` alone, with its place in the default ROUTE_PRIORITY."""
    pipeline = make_pipeline(settings)
    topic, route = next((t, r) for t, r in pipeline.routes.items() if r.name is name)
    route = dataclasses.replace(route, writer=writer, priority=settings.priority_of(name))
    return batch_processor(settings, {topic: route}, FakeDeadLetters(), shared), route.priority


async def test_telemetry_chunks_wait_while_an_incident_is_in_hand_and_incidents_never_wait(
    fast_settings: Settings,
) -> None:
    """Two route loops sharing one WritePriority: the incident arrives while telemetry's first
    chunk is being written; telemetry's next chunk starts only once the incident is written."""
    factory = EventFactory(seed=3)
    shared = WritePriority()
    telemetry_writer = TimedWriter(collection="telemetry_buffer", seconds=0.05)
    incidents_writer = TimedWriter(collection="incidents", seconds=0.1)
    telemetry, _ = route_processor(fast_settings, RouteName.TELEMETRY, telemetry_writer, shared)
    incidents, _ = route_processor(fast_settings, RouteName.INCIDENTS, incidents_writer, shared)
    backlog = [good_record(factory, RouteName.TELEMETRY, n) for n in range(3 * WRITE_CHUNK)]
    incident = [good_record(factory, RouteName.INCIDENTS, 0)]

    draining = asyncio.ensure_future(telemetry.process({TopicPartition(backlog[0].topic, 0): backlog}))
    await asyncio.sleep(0.02)  # telemetry's first chunk is in flight
    incident_sent = time.monotonic()
    await incidents.process({TopicPartition(incident[0].topic, 0): incident})
    await draining

    (incident_started, incident_ended), = incidents_writer.spans
    assert incident_started - incident_sent < 0.02, "the first route never waits"
    first, second, _ = telemetry_writer.spans
    assert first[0] < incident_started, "the write already in flight is not interrupted"
    assert second[0] >= incident_ended, "telemetry's next chunk waited for the incident"


def test_route_priority_defaults_to_incidents_results_validation_telemetry() -> None:
    settings = Settings()
    assert settings.route_priority == (
        RouteName.INCIDENTS, RouteName.RESULTS, RouteName.VALIDATION, RouteName.TELEMETRY,
    )  # fmt: skip
    assert [settings.priority_of(name) for name in settings.route_priority] == [0, 1, 2, 3]


def test_routes_left_out_of_route_priority_follow_in_the_default_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTE_PRIORITY", " Telemetry , validation")
    assert Settings().route_priority == (
        RouteName.TELEMETRY, RouteName.VALIDATION, RouteName.INCIDENTS, RouteName.RESULTS,
    )  # fmt: skip


def test_a_route_named_twice_in_route_priority_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_settings import settings_error

    message = settings_error(monkeypatch, ROUTE_PRIORITY="incidents,telemetry,incidents")
    assert message.startswith("configuration error: ROUTE_PRIORITY: ")
    assert "incidents" in message


@given(
    named=st.lists(st.sampled_from(list(RouteName)), unique=True),
    spellings=st.lists(st.sampled_from([str.upper, str.lower, str.title]), min_size=4, max_size=4),
    padding=st.sampled_from(["", " ", "  ", "\t"]),
)
def test_any_route_priority_names_each_route_once_keeping_the_given_order_first(
    named: list[RouteName], spellings: list[Any], padding: str
) -> None:
    raw = ",".join(f"{padding}{spell(name.value)}{padding}" for spell, name in zip(spellings, named, strict=False))
    with mock.patch.dict(os.environ, {"ROUTE_PRIORITY": raw}):
        priority = Settings().route_priority
    assert sorted(priority) == sorted(RouteName)
    assert list(priority[: len(named)]) == named


@pytest.mark.parametrize("isolation", [True, False])
def test_route_isolation_gives_each_route_its_own_group_member_highest_first(isolation: bool) -> None:
    settings = Settings(route_isolation=isolation, route_priority="telemetry")
    routes = make_pipeline(settings).routes
    routes = {topic: dataclasses.replace(r, priority=settings.priority_of(r.name)) for topic, r in routes.items()}
    members = member_routes(settings, routes)
    if isolation:
        assert [[route.name for route in member.values()] for member in members] == [
            [RouteName.TELEMETRY], [RouteName.INCIDENTS], [RouteName.RESULTS], [RouteName.VALIDATION]
        ]
    else:
        assert members == [routes]


async def test_one_batch_of_several_routes_writes_the_higher_route_first_and_finishes(
    fast_settings: Settings,
) -> None:
    """Without isolation one batch holds several routes: telemetry read first still writes after
    the incident (it waits for the incident's writes, never for the whole batch: no deadlock)."""
    factory = EventFactory(seed=4)
    pipeline = make_pipeline(fast_settings)
    telemetry_writer = TimedWriter(collection="telemetry_buffer", seconds=0.01)
    incidents_writer = TimedWriter(collection="incidents", seconds=0.01)
    writers = {RouteName.TELEMETRY: telemetry_writer, RouteName.INCIDENTS: incidents_writer}
    routes = {
        topic: dataclasses.replace(
            route, writer=writers.get(route.name, route.writer), priority=fast_settings.priority_of(route.name)
        )
        for topic, route in pipeline.routes.items()
    }
    processor = batch_processor(fast_settings, routes, FakeDeadLetters())
    telemetry = [good_record(factory, RouteName.TELEMETRY, n) for n in range(WRITE_CHUNK + 1)]
    incident = [good_record(factory, RouteName.INCIDENTS, 0)]
    batch = {TopicPartition(telemetry[0].topic, 0): telemetry, TopicPartition(incident[0].topic, 0): incident}
    result = await asyncio.wait_for(processor.process(batch), timeout=5)
    assert result.stored == len(telemetry) + 1
    (incident_span,) = incidents_writer.spans
    assert min(start for start, _ in telemetry_writer.spans) >= incident_span[1]
