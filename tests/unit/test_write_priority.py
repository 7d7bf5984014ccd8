"""Specification of route priority at MongoDB (ROUTE_PRIORITY): at most MONGODB_WRITE_CONCURRENCY
writes in flight, a freed slot to the highest route waiting; while a route with a backlog is
writing, the routes after it wait for a slot even when one is free, for at most
ROUTE_PRIORITY_HOLD_MS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from tests.support.events import EventFactory
from tests.support.pipeline import Document, FakeDeadLetters, FakeWriter, good_record, make_pipeline
from tests.support.virtual_time import run_virtually
from worker.kafka.consumer import TopicPartition
from worker.mongo.gateway import MongoGateway
from worker.mongo.writers import WriteOutcome
from worker.pipeline.assembly import batch_processor, group_consumers, member_routes, routes_for
from worker.pipeline.batch import WRITE_CHUNK, BatchProcessor
from worker.pipeline.write_gate import GRACE_S, MAX_PASSES, WriteGate
from worker.settings import RouteName, Settings

FIRST, SECOND, THIRD = 0, 1, 2


async def settles(awaitable: asyncio.Future[None] | asyncio.Task[None], within: float = 0.05) -> bool:
    """True when `awaitable` is done within `within` seconds (it is not cancelled either way)."""
    done, _ = await asyncio.wait({awaitable}, timeout=within)
    return bool(done)


async def take_turn(gate: WriteGate, priority: int, order: list[int], release: asyncio.Event) -> None:
    async with gate.turn(priority, f"route-{priority}"):
        order.append(priority)
        await release.wait()


async def test_no_more_writes_than_slots_are_in_flight_and_a_freed_slot_is_taken_at_once() -> None:
    gate, order, release = WriteGate(permits=2), list[int](), asyncio.Event()
    writes = [asyncio.ensure_future(take_turn(gate, THIRD, order, release)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert order == [THIRD, THIRD], "two slots: the third write waits"
    release.set()
    assert await settles(asyncio.gather(*writes))
    assert order == [THIRD, THIRD, THIRD]


async def test_a_freed_slot_goes_to_the_highest_route_waiting_first_come_first_served_among_equals() -> None:
    gate, order, release = WriteGate(permits=1), list[int](), asyncio.Event()
    holder = asyncio.ensure_future(take_turn(gate, THIRD, order, release))
    await asyncio.sleep(0)
    waiting = []
    for priority in (THIRD, SECOND, FIRST, SECOND):
        waiting.append(asyncio.ensure_future(take_turn(gate, priority, order, release)))
        await asyncio.sleep(0)
    release.set()
    assert await settles(asyncio.gather(holder, *waiting))
    assert order == [THIRD, FIRST, SECOND, SECOND, THIRD]


async def test_a_cancelled_waiter_takes_no_slot_with_it() -> None:
    gate, order, release = WriteGate(permits=1), list[int](), asyncio.Event()
    holder = asyncio.ensure_future(take_turn(gate, FIRST, order, release))
    await asyncio.sleep(0)
    cancelled = asyncio.ensure_future(take_turn(gate, SECOND, order, release))
    waiting = asyncio.ensure_future(take_turn(gate, THIRD, order, release))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    assert await settles(asyncio.gather(holder, waiting))
    assert order == [FIRST, THIRD]
    assert await settles(asyncio.ensure_future(take_turn(gate, FIRST, order, release))), "the slot is free again"


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
    settings: Settings, name: RouteName, writer: FakeWriter, shared: WriteGate
) -> tuple[BatchProcessor, int]:
    """A processor for route `name` alone, with its place in the settings' ROUTE_PRIORITY."""
    pipeline = make_pipeline(settings)
    topic, route = next((t, r) for t, r in pipeline.routes.items() if r.name is name)
    route = dataclasses.replace(route, writer=writer)
    return batch_processor(settings, {topic: route}, FakeDeadLetters(), shared), route.priority


async def test_an_incident_waits_only_for_the_write_in_flight_then_goes_before_telemetrys_next_chunk(
    fast_settings: Settings,
) -> None:
    """Two route loops sharing a one-slot gate: the incident arrives while telemetry's first chunk
    is being written; it is written as soon as that chunk is done, before telemetry's next one."""
    factory = EventFactory(seed=3)
    shared = WriteGate(permits=1)
    telemetry_writer = TimedWriter(collection="telemetry_buffer", seconds=0.05)
    incidents_writer = TimedWriter(collection="incidents", seconds=0.05)
    telemetry, _ = route_processor(fast_settings, RouteName.TELEMETRY, telemetry_writer, shared)
    incidents, _ = route_processor(fast_settings, RouteName.INCIDENTS, incidents_writer, shared)
    backlog = [good_record(factory, RouteName.TELEMETRY, n) for n in range(3 * WRITE_CHUNK)]
    incident = [good_record(factory, RouteName.INCIDENTS, 0)]

    draining = asyncio.ensure_future(telemetry.process({TopicPartition(backlog[0].topic, 0): backlog}))
    await asyncio.sleep(0.02)  # telemetry's first chunk is in flight
    await incidents.process({TopicPartition(incident[0].topic, 0): incident})
    await draining

    ((incident_started, incident_ended),) = incidents_writer.spans
    first, second, _ = telemetry_writer.spans
    assert first[1] <= incident_started, "the write already in flight is not interrupted"
    assert second[0] >= incident_ended, "telemetry's next chunk waited for the incident"


async def test_route_priority_defaults_to_incidents_results_validation_telemetry() -> None:
    """And the worker's routes carry their place in it (0 is served first)."""
    settings = Settings()
    assert settings.route_priority == (
        RouteName.INCIDENTS, RouteName.RESULTS, RouteName.VALIDATION, RouteName.TELEMETRY,
    )  # fmt: skip
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri.get_secret_value(), connect=False)
    try:
        routes = routes_for(settings, MongoGateway(client=client, database_name="unused"))
        assert {route.name: route.priority for route in routes.values()} == {
            RouteName.INCIDENTS: 0, RouteName.RESULTS: 1, RouteName.VALIDATION: 2, RouteName.TELEMETRY: 3,
        }  # fmt: skip
    finally:
        await client.close()


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
    members = member_routes(settings, routes)
    if isolation:
        assert [[route.name for route in member.values()] for member in members] == [
            [RouteName.TELEMETRY], [RouteName.INCIDENTS], [RouteName.RESULTS], [RouteName.VALIDATION]
        ]
    else:
        assert members == [routes]


@pytest.mark.parametrize("isolation", [True, False])
async def test_a_replicas_members_are_named_after_their_routes_and_share_its_fetch_budget(isolation: bool) -> None:
    settings = Settings(route_isolation=isolation, kafka_client_id="pw", kafka_fetch_max_bytes=4 * 1024 * 1024)
    consumers = group_consumers(settings, member_routes(settings, make_pipeline(settings).routes))
    names = sorted(consumer._client._client_id for consumer in consumers)
    assert names == (sorted(f"pw-{route.value}" for route in RouteName) if isolation else ["pw"])
    assert sum(consumer._fetch_max_bytes for consumer in consumers) == 4 * 1024 * 1024


async def test_one_batch_of_several_routes_lets_the_higher_route_in_before_the_lower_ones_next_chunk(
    fast_settings: Settings,
) -> None:
    """Without isolation one batch holds several routes: telemetry, read first, starts its first
    chunk; the incident goes next, before telemetry's second chunk, and the batch finishes."""
    factory = EventFactory(seed=4)
    pipeline = make_pipeline(fast_settings)
    telemetry_writer = TimedWriter(collection="telemetry_buffer", seconds=0.01)
    incidents_writer = TimedWriter(collection="incidents", seconds=0.01)
    writers = {RouteName.TELEMETRY: telemetry_writer, RouteName.INCIDENTS: incidents_writer}
    routes = {
        topic: dataclasses.replace(route, writer=writers.get(route.name, route.writer))
        for topic, route in pipeline.routes.items()
    }
    processor = batch_processor(fast_settings, routes, FakeDeadLetters(), WriteGate(permits=1))
    telemetry = [good_record(factory, RouteName.TELEMETRY, n) for n in range(WRITE_CHUNK + 1)]
    incident = [good_record(factory, RouteName.INCIDENTS, 0)]
    batch = {TopicPartition(telemetry[0].topic, 0): telemetry, TopicPartition(incident[0].topic, 0): incident}
    result = await asyncio.wait_for(processor.process(batch), timeout=5)
    assert result.stored == len(telemetry) + 1
    ((incident_started, _),) = incidents_writer.spans
    _, second = telemetry_writer.spans
    assert incident_started < second[0]


def test_two_writes_are_in_flight_at_most_by_default() -> None:
    assert Settings().mongodb_write_concurrency == 2


BACKLOG = 100
"""The gate's backlog threshold in these tests (the worker's is KAFKA_MAX_BATCH_RECORDS)."""


class Turn:
    """One write attempt held open until `finish()`."""

    def __init__(self, gate: WriteGate, priority: int) -> None:
        self.started, self._release = asyncio.Event(), asyncio.Event()
        self.task = asyncio.ensure_future(self._run(gate, priority))

    async def _run(self, gate: WriteGate, priority: int) -> None:
        async with gate.turn(priority, f"route-{priority}"):
            self.started.set()
            await self._release.wait()

    async def finish(self) -> None:
        self._release.set()
        await self.task


async def started(turn: Turn, within: float = 0.05) -> bool:
    return await settles(asyncio.ensure_future(turn.started.wait()), within)


async def test_while_a_higher_route_with_a_backlog_writes_a_lower_route_waits_though_a_slot_is_free() -> None:
    gate = WriteGate(permits=2, backlog=BACKLOG, hold_s=10)
    gate.report_lag(FIRST, BACKLOG)
    incidents = Turn(gate, FIRST)
    assert await started(incidents)
    telemetry = Turn(gate, THIRD)
    assert not await started(telemetry, within=0.1), "held: the incidents' backlog is being written"
    await incidents.finish()
    assert await started(telemetry), "the higher route is between writes: the gap is the lower route's"
    await telemetry.finish()


async def test_the_next_write_of_the_higher_route_keeps_its_place_over_a_held_lower_route() -> None:
    gate = WriteGate(permits=1, backlog=BACKLOG, hold_s=10)
    gate.report_lag(FIRST, 5 * BACKLOG)
    first_chunk = Turn(gate, FIRST)
    assert await started(first_chunk)
    telemetry = Turn(gate, THIRD)
    await asyncio.sleep(0)
    await first_chunk.finish()
    second_chunk = Turn(gate, FIRST)  # the same batch's next chunk, a few loop turns later
    assert await started(second_chunk)
    assert not telemetry.started.is_set()
    await second_chunk.finish()
    assert await started(telemetry, within=GRACE_S + 0.05)
    await telemetry.finish()


async def test_a_held_lower_route_takes_the_next_free_slot_once_it_has_waited_the_hold() -> None:
    gate = WriteGate(permits=2, backlog=BACKLOG, hold_s=0.2)
    gate.report_lag(FIRST, BACKLOG)
    incidents = Turn(gate, FIRST)
    assert await started(incidents)
    waited_from = time.monotonic()
    telemetry = Turn(gate, THIRD)
    assert await started(telemetry, within=2), "never starved"
    assert time.monotonic() - waited_from >= 0.2
    await asyncio.gather(incidents.finish(), telemetry.finish())


@pytest.mark.parametrize(
    ("lag", "writing"),
    [(BACKLOG - 1, True), (10 * BACKLOG, False)],
    ids=["lag-below-a-batch-steady-load", "backlog-but-not-writing-backing-off"],
)
async def test_a_lower_route_is_not_held_without_a_higher_backlog_being_written(lag: int, writing: bool) -> None:
    gate = WriteGate(permits=2, backlog=BACKLOG, hold_s=10)
    gate.report_lag(FIRST, lag)
    incidents = Turn(gate, FIRST) if writing else None
    if incidents is not None:
        assert await started(incidents)
    telemetry = Turn(gate, THIRD)
    assert await started(telemetry)
    await asyncio.gather(telemetry.finish(), *([incidents.finish()] if incidents else []))


async def test_a_backlog_holds_only_the_routes_after_it() -> None:
    gate = WriteGate(permits=3, backlog=BACKLOG, hold_s=10)
    gate.report_lag(SECOND, BACKLOG)
    results = Turn(gate, SECOND)
    assert await started(results)
    incidents, telemetry = Turn(gate, FIRST), Turn(gate, THIRD)
    assert await started(incidents), "a route before the backlog is never held by it"
    assert not await started(telemetry)
    await asyncio.gather(results.finish(), incidents.finish())
    assert await started(telemetry, within=GRACE_S + 0.05)
    await telemetry.finish()


@given(
    writes=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=12
    ),
    lags=st.lists(st.integers(0, 2 * BACKLOG), min_size=4, max_size=4),
    permits=st.integers(1, 3),
)
@hypothesis.settings(max_examples=40, deadline=None)
def test_any_mix_of_writes_and_lags_keeps_the_slot_bound_finishes_every_write_and_honours_the_holds(
    writes: list[tuple[int, int, int]], lags: list[int], permits: int
) -> None:
    """Writes (priority, arrival delay, duration in ms) under random lags: never more than
    `permits` in flight, each one done, and a write that starts while a route before it with a
    backlog has been writing since before it asked has waited out the hold."""
    hold_s = 0.03

    async def scenario() -> None:
        gate = WriteGate(permits=permits, backlog=BACKLOG, hold_s=hold_s)
        for priority, lag in enumerate(lags):
            gate.report_lag(priority, lag)
        in_flight: list[tuple[int, float]] = []  # (priority, started at)
        violations: list[str] = []

        async def write(priority: int, delay_ms: int, duration_ms: int) -> None:
            await asyncio.sleep(delay_ms / 1000)
            asked = time.monotonic()
            async with gate.turn(priority, "r"):
                waited = time.monotonic() - asked
                blocking = [p for p, at in in_flight if p < priority and lags[p] >= BACKLOG and at <= asked]
                if blocking and waited < hold_s:
                    violations.append(f"{priority} started after {waited:.3f} s beside {blocking}")
                entry = (priority, time.monotonic())
                in_flight.append(entry)
                if len(in_flight) > permits:
                    violations.append(f"{len(in_flight)} in flight")
                await asyncio.sleep(duration_ms / 1000)
                in_flight.remove(entry)

        await asyncio.wait_for(asyncio.gather(*(write(*w) for w in writes)), timeout=5)
        assert violations == []

    asyncio.run(scenario())


@dataclass
class Write:
    """One write through the gate, as the routes' tasks saw it."""

    priority: int
    asked_at: float
    asked_after: int  # writes started before it asked
    ahead: int  # other writes waiting when it asked
    started_after: int | None = None  # writes started before it did


class Trace:
    """Every write through one gate: when it asked, what was waiting then, and the order of starts."""

    def __init__(self, gate: WriteGate) -> None:
        self.gate = gate
        self.writes: list[Write] = []
        self.starts: list[float] = []  # when each write started, in order

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[Write]:
        loop = asyncio.get_running_loop()
        write = Write(priority, loop.time(), len(self.starts), sum(w.started_after is None for w in self.writes))
        self.writes.append(write)
        async with self.gate.turn(priority, f"route-{priority}"):
            write.started_after = len(self.starts)
            self.starts.append(loop.time())
            yield write

    def passed_after_hold(self, write: Write, hold_s: float) -> int:
        """Writes that started before `write` (or the end, if it is still waiting) once it had waited `hold_s`."""
        end = len(self.starts) if write.started_after is None else write.started_after
        return sum(at - write.asked_at >= hold_s for at in self.starts[write.asked_after : end])


async def write_back_to_back(trace: Trace, priority: int, writes: Iterable[tuple[int, int]]) -> None:
    """One route's writes, one after the other: (gap before asking, time holding the slot) in ms;
    a gap of 0 asks again at once, without an event-loop turn."""
    for gap_ms, duration_ms in writes:
        if gap_ms:
            await asyncio.sleep(gap_ms / 1000)
        async with trace.turn(priority):
            await asyncio.sleep(duration_ms / 1000)


def test_with_one_slot_and_the_holds_off_the_lowest_route_goes_next_once_passed_over_max_passes_times() -> None:
    """Two higher routes always have a write waiting when the slot frees (back to back, holds
    off): telemetry's write is passed over exactly MAX_PASSES times, then goes next."""

    async def scenario() -> Write:
        trace = Trace(WriteGate(permits=1, backlog=BACKLOG, hold_s=0))
        higher = [asyncio.ensure_future(write_back_to_back(trace, p, itertools.repeat((0, 10), 200))) for p in (0, 1)]
        await asyncio.sleep(0.005)  # the first route's write is in flight, the second's waits
        async with trace.turn(THIRD) as telemetry:
            pass
        await asyncio.gather(*higher)
        assert telemetry.ahead == 1
        return telemetry

    telemetry = run_virtually(scenario())
    assert telemetry.started_after is not None
    passed = telemetry.started_after - telemetry.asked_after
    assert passed == MAX_PASSES, f"telemetry waited for {passed} writes of the higher routes"


ROUTE_WRITES = st.lists(st.tuples(st.just(0) | st.integers(0, 20), st.integers(0, 20)), max_size=30)
"""One route's writes: (gap before asking, time holding the slot) in ms; back to back at gap 0 (often)."""


@given(
    routes=st.lists(ROUTE_WRITES, min_size=1, max_size=4),
    lags=st.lists(st.integers(0, 2 * BACKLOG), min_size=4, max_size=4),
    permits=st.integers(1, 3),
    hold_ms=st.integers(0, 1000),
)
@hypothesis.settings(max_examples=200, deadline=None)
def test_any_permits_hold_and_arrivals_hand_every_waiting_write_a_slot_within_the_bound(
    routes: list[list[tuple[int, int]]], lags: list[int], permits: int, hold_ms: int
) -> None:
    """Whatever the permits, hold, lags and arrivals, once a write has waited the hold at most
    MAX_PASSES + (writes already waiting when it asked) others are handed a slot before it."""
    hold_s = hold_ms / 1000

    async def scenario() -> Trace:
        trace = Trace(WriteGate(permits=permits, backlog=BACKLOG, hold_s=hold_s))
        for priority, lag in enumerate(lags):
            trace.gate.report_lag(priority, lag)
        tasks = [write_back_to_back(trace, priority, writes) for priority, writes in enumerate(routes)]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=3600)
        return trace

    trace = run_virtually(scenario())
    # A write handed its slot starts a few event-loop turns later; meanwhile a write of another
    # route may take another free slot and start first, without taking its place: one per route.
    overtaking = len(routes) - 1
    for write in trace.writes:
        assert trace.passed_after_hold(write, hold_s) <= MAX_PASSES + write.ahead + overtaking, write
