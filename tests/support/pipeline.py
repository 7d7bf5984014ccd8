"""The pipeline's fakes (a writer, the dead letters, a batch processor) and the batch processor
app.py builds, on the worker's routing table with fake writers and dead letters.

    pipeline = make_pipeline(settings)
    result = await pipeline.process(good_record(factory, RouteName.INCIDENTS, 5))
    pipeline.writers[RouteName.INCIDENTS].documents, pipeline.dead_letters.letters
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import TopicPartition

from schemas.documents import telemetry_buffer_document
from tests.support.events import EventFactory
from tests.support.kafka import FakeRecord
from tests.support.mongo import FakeGateway
from tests.support.routes import TOPICS
from worker.dead_letters.letters import DeadLetter
from worker.mongo.writers import WriteOutcome
from worker.pipeline.assembly import batch_processor, routes_for
from worker.pipeline.batch import BatchOutcome, BatchProcessor
from worker.pipeline.routes import Route
from worker.settings import RouteName, Settings

Document = Mapping[str, Any]
BUFFERED_AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
"""When the telemetry route buffers an event here (the worker stamps the time of the write)."""
VAL, RES, INC, TEL = (TopicPartition(TOPICS[name], 0) for name in RouteName)


@dataclass
class FakeWriter:
    """A route's writer: records each batch of documents; fails with `errors` in turn (or always with
    `always_fail`), then refuses the positions of `refused` and skips those of `skipped`."""

    collection: str
    errors: list[Exception] = field(default_factory=list)
    always_fail: Exception | None = None
    refused: dict[int, str] = field(default_factory=dict)
    skipped: frozenset[int] = frozenset()
    calls: list[list[Document]] = field(default_factory=list)

    async def write(self, documents: Sequence[Document]) -> WriteOutcome:
        self.calls.append(list(documents))
        if self.always_fail is not None:
            raise self.always_fail
        if self.errors:
            raise self.errors.pop(0)
        stored = len(documents) - len(self.refused) - len(self.skipped)
        return WriteOutcome(stored=stored, skipped=self.skipped, refused=dict(self.refused))

    @property
    def documents(self) -> list[Document]:
        return [document for call in self.calls for document in call]


@dataclass
class FakeDeadLetters:
    """The dead-letter publisher: collects the letters published, or raises `error`."""

    error: Exception | None = None
    letters: list[DeadLetter] = field(default_factory=list)
    calls: int = 0

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.letters.extend(letters)


@dataclass
class FakeProcessor:
    """A consumer loop's batch processor: returns the queued results (or raises the queued exceptions)
    and records the batches it saw, the offsets settled and the partitions forgotten."""

    outcomes: list[BatchOutcome | Exception]
    seen: list[Mapping[TopicPartition, Sequence[Any]]] = field(default_factory=list)
    settled_offsets: list[dict[TopicPartition, int]] = field(default_factory=list)
    forgotten: list[TopicPartition] = field(default_factory=list)

    def settled(self, commits: Mapping[TopicPartition, int]) -> None:
        self.settled_offsets.append(dict(commits))

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        self.forgotten.extend(partitions)

    async def process(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> BatchOutcome:
        self.seen.append(dict(batch))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass
class Pipeline:
    """A batch processor with its routes, their writers and its dead letters."""

    processor: BatchProcessor
    writers: dict[RouteName, FakeWriter]
    dead_letters: FakeDeadLetters
    routes: dict[str, Route]

    async def process(self, *records: FakeRecord) -> BatchOutcome:
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        for record in records:
            batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return await self.processor.process(batch)

    def document(self, name: RouteName, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """The document route `name` writes for `event`."""
        route = self.routes[TOPICS[name]]
        return route.to_document(route.model.model_validate(event))


def make_pipeline(
    settings: Settings, *, fail_closed: frozenset[RouteName] = frozenset(), dlq_error: Exception | None = None
) -> Pipeline:
    """The processor app.py builds from `settings` (worker.pipeline.assembly), on the routing table
    made from them with `fail_closed` routes; each route writes to a FakeWriter of its collection."""
    if fail_closed:
        settings = settings.model_copy(update={"fail_closed_routes": fail_closed})
    routes = {topic: _with_fakes(route) for topic, route in routes_for(settings, FakeGateway()).items()}  # type: ignore[arg-type]
    writers: dict[RouteName, Any] = {route.name: route.writer for route in routes.values()}
    dead_letters = FakeDeadLetters(error=dlq_error)
    return Pipeline(batch_processor(settings, routes, dead_letters), writers, dead_letters, routes)  # type: ignore[arg-type]


def _with_fakes(route: Route) -> Route:
    """`route` writing to a FakeWriter; the telemetry route buffering at BUFFERED_AT rather than now."""
    changes: dict[str, Any] = {"writer": FakeWriter(collection=route.writer.collection)}
    if route.name is RouteName.TELEMETRY:
        changes["to_document"] = lambda event: telemetry_buffer_document(event, buffered_at=BUFFERED_AT)
    return dataclasses.replace(route, **changes)


def record(
    name: RouteName, offset: int, value: bytes | dict[str, Any] | None, *, partition: int = 0, **extra: Any
) -> FakeRecord:
    """A record of route `name`'s topic holding `value` (a dict is written as JSON)."""
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return FakeRecord(topic=TOPICS[name], partition=partition, offset=offset, value=raw, **extra)


def good_record(factory: EventFactory, name: RouteName, offset: int, *, partition: int = 0) -> FakeRecord:
    """A record of a valid event of route `name`."""
    return record(name, offset, factory.good(name), partition=partition)


def letters_summary(letters: Sequence[DeadLetter]) -> list[tuple[str, int, int, str, str, str]]:
    """Each dead letter's source topic, partition and offset, its dead-letter topic, error type and reason."""
    return [
        (dl.record.topic, dl.record.partition, dl.record.offset, dl.dlq_topic, dl.error_type, dl.reason)
        for dl in letters
    ]
