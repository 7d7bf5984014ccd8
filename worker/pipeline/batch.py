"""One polled batch -> documents written, dead letters sent, offsets to commit.

The processor decides; the consumer loop (worker.pipeline.consumer) moves offsets. A partition
whose fail-closed route could not be written is "blocked": nothing of it is committed
or dead-lettered, and the loop re-reads it from its first offset later.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka.structs import TopicPartition

from worker.errors import DocumentRefused, OperationRefused, TransientError, WorkerError
from worker.mongo.writers import WriteOutcome
from worker.ops import metrics
from worker.ops.trace import trace_id
from worker.pipeline.dead_letters import (
    ERROR_TYPE_PERSIST_FAILED,
    ERROR_TYPE_PERSIST_REFUSED,
    DeadLetter,
    DeadLetterPublisher,
)
from worker.pipeline.prepare import Refused, prepare
from worker.pipeline.routes import FailurePolicy, Route
from worker.retry import RetryPolicy, with_retries
from worker.settings import Settings

log = structlog.get_logger(__name__)


class Record(Protocol):
    """The parts of aiokafka's ConsumerRecord the worker reads (aiokafka ships no types)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


Batch = Mapping[TopicPartition, Sequence[Record]]


@dataclass(frozen=True, slots=True)
class Prepared:
    tp: TopicPartition
    record: Record
    document: Mapping[str, Any]
    event_id: str | None


WRITE_CHUNK = 250
"""Records per bulk write (a batch of one route is written in chunks, one after the other)."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    items: list[Prepared]
    task: asyncio.Task[WriteOutcome]
    started: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class RouteResult:
    dead: list[DeadLetter] = field(default_factory=list)
    blocked: set[TopicPartition] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BatchResult:
    commits: dict[TopicPartition, int]
    """Offset to commit (last processed + 1) per partition that is fully safe."""
    blocked: dict[TopicPartition, int]
    """First offset to re-read per partition held back by a fail-closed route."""
    stored: int
    dead_lettered: int


class BatchProcessor:
    def __init__(
        self, *, routes: Mapping[str, Route], dead_letters: DeadLetterPublisher, settings: Settings
    ) -> None:
        self._routes = routes
        self._dead_letters = dead_letters
        self._settings = settings

    def _prepare(self, route: Route, tp: TopicPartition, record: Record) -> Prepared | Refused:
        """The record's document, or why it must be dead-lettered; never raises."""
        outcome = prepare(
            route,
            record.value,
            record.headers,
            max_bytes=self._settings.max_event_bytes,
            max_depth=self._settings.max_nesting_depth,
        )
        if isinstance(outcome, Refused):
            return outcome
        return Prepared(tp=tp, record=record, document=outcome.document, event_id=outcome.event_id)

    async def process(self, batch: Batch) -> BatchResult:
        """Write every good record, dead-letter the rest; raises TransientError if the DLQ is down.

        A route's records are written in chunks of WRITE_CHUNK, one after the other: each chunk
        is sent as soon as it is prepared, so decoding the next chunk overlaps the server's work.
        """
        items: list[Prepared] = []
        rejected: list[tuple[DeadLetter, Refused]] = []
        filling: dict[str, list[Prepared]] = defaultdict(list)
        chunks: dict[str, list[_Chunk]] = defaultdict(list)
        try:
            for tp, records in batch.items():
                route = self._routes[tp.topic]
                for record in records:
                    item = self._prepare(route, tp, record)
                    if isinstance(item, Refused):
                        rejected.append((_rejection_letter(record, route.dlq_topic, item), item))
                        continue
                    items.append(item)
                    filling[tp.topic].append(item)
                    if len(filling[tp.topic]) >= WRITE_CHUNK:
                        self._start_chunk(route, filling.pop(tp.topic), chunks[tp.topic])
                        await asyncio.sleep(0)  # let the chunk go out before preparing on
            for topic, rest in filling.items():
                self._start_chunk(self._routes[topic], rest, chunks[topic])
            results = await asyncio.gather(
                *(self._finish_route(self._routes[topic], started) for topic, started in chunks.items())
            )
        except BaseException:
            for started in chunks.values():
                for chunk in started:
                    chunk.task.cancel()
            raise
        blocked = set().union(*(result.blocked for result in results))
        letters = [letter for result in results for letter in result.dead if _tp(letter) not in blocked]
        for letter, refused in rejected:
            if _tp(letter) not in blocked:
                letters.append(letter)
                _log_rejection(letter, refused)
        await self._dead_letters.publish(letters)
        _count(batch, letters, blocked, self._routes)
        written = [item for item in items if item.tp not in blocked]
        stored = len(written) - sum(len(r.dead) for r in results)
        return BatchResult(
            commits={tp: records[-1].offset + 1 for tp, records in batch.items() if tp not in blocked},
            blocked={tp: records[0].offset for tp, records in batch.items() if tp in blocked},
            stored=stored,
            dead_lettered=len(letters),
        )

    def settled(self, commits: Mapping[TopicPartition, int]) -> None:
        """Offsets committed: the dead letters of those records need not be remembered."""
        self._dead_letters.settled(commits)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: forget which of their dead letters were acknowledged."""
        self._dead_letters.forget(partitions)

    def _start_chunk(self, route: Route, items: list[Prepared], started: list[_Chunk]) -> None:
        previous = started[-1].task if started else None
        started.append(_Chunk(items, asyncio.create_task(self._write_chunk(route, items, previous))))

    async def _write_chunk(
        self, route: Route, items: list[Prepared], previous: asyncio.Task[WriteOutcome] | None
    ) -> WriteOutcome:
        """One bulk write with retries, after the route's previous chunk (never two at once)."""
        if previous is not None:
            await asyncio.wait([previous])
            failure = None if previous.cancelled() else previous.exception()
            if isinstance(failure, WorkerError):
                raise failure  # an outage (server down, operation refused): do not try all over again
        metrics.BATCH_SIZE.labels(route.name.value).observe(len(items))
        return await self._write_items(route, items)

    async def _write_items(self, route: Route, items: list[Prepared]) -> WriteOutcome:
        """Write with retries; a refused document is isolated, any other failure is the chunk's outage."""
        documents = [item.document for item in items]
        try:
            policy = RetryPolicy.from_settings(self._settings)
            return await with_retries(policy, route.writer.collection, route.writer.write, documents)
        except DocumentRefused as exc:
            if len(items) == 1:
                return WriteOutcome(stored=0, refused={0: str(exc)})
            # One document may spoil the whole bulk write (e.g. BSON cannot encode it): isolate it.
            return await self._write_one_by_one(route, items)

    async def _finish_route(self, route: Route, chunks: list[_Chunk]) -> RouteResult:
        """Wait for the route's chunks; one outcome, one log line per partition, as for one write."""
        written: list[Prepared] = []
        stored, skipped, refused_at = 0, set[int](), dict[int, str]()
        failed: list[Prepared] = []
        failure: WorkerError | None = None
        for chunk in chunks:
            try:
                outcome = await chunk.task
            except WorkerError as exc:
                failed.extend(chunk.items)
                failure = exc
                continue
            base = len(written)
            written.extend(chunk.items)
            stored += outcome.stored
            skipped.update(base + index for index in outcome.skipped)
            refused_at.update({base + index: reason for index, reason in outcome.refused.items()})
        result = RouteResult()
        if written:
            metrics.WRITE_LATENCY.labels(route.name.value).observe(time.perf_counter() - chunks[0].started)
            outcome = WriteOutcome(stored=stored, skipped=frozenset(skipped), refused=refused_at)
            result.dead = [
                DeadLetter(
                    written[index].record, route.dlq_topic, ERROR_TYPE_PERSIST_REFUSED, "refused", reason
                )
                for index, reason in outcome.refused.items()
            ]
            for letter in result.dead:
                log.error("event_refused_by_mongodb", **_coordinates(letter.record), error=letter.message)
            metrics.RECORDS_SKIPPED.labels(route.name.value).inc(len(outcome.skipped))
            _log_saved(route, written, outcome)
        if failure is not None:
            lost = self._write_failed(route, failed, failure)
            result.dead.extend(lost.dead)
            result.blocked |= lost.blocked
        return result

    async def _write_one_by_one(self, route: Route, items: list[Prepared]) -> WriteOutcome:
        """Write each document alone; those refused become `refused`; an outage fails the chunk."""
        stored, skipped, refused = 0, set[int](), dict[int, str]()
        for index, item in enumerate(items):
            alone = await self._write_items(route, [item])
            stored += alone.stored
            if alone.skipped:
                skipped.add(index)
            if alone.refused:
                refused[index] = next(iter(alone.refused.values()))
        return WriteOutcome(stored=stored, skipped=frozenset(skipped), refused=refused)

    def _write_failed(self, route: Route, items: list[Prepared], exc: WorkerError) -> RouteResult:
        partitions = sorted({item.tp.partition for item in items})
        metrics.PERSIST_FAILURES.labels(route.name.value, route.policy.value).inc()
        if route.policy is FailurePolicy.FAIL_CLOSED:
            log.warning(
                f"{route.writer.collection}_persist_blocked",
                topic=route.topic, partitions=partitions, records=len(items), error=str(exc),
            )  # fmt: skip
            return RouteResult(blocked={item.tp for item in items})
        log.error(
            route.failed_event,
            topic=route.topic, partitions=partitions, records=len(items), error=str(exc),
            transient=isinstance(exc, TransientError), dlq_topic=route.dlq_topic,
        )  # fmt: skip
        reason = _failure_reason(exc)
        return RouteResult(
            dead=[
                DeadLetter(item.record, route.dlq_topic, ERROR_TYPE_PERSIST_FAILED, reason, str(exc))
                for item in items
            ]
        )


def _failure_reason(exc: WorkerError) -> str:
    """The `x-error-reason` of a route's records dead-lettered because of an outage."""
    if isinstance(exc, TransientError):
        return "retries_exhausted"
    if isinstance(exc, OperationRefused):
        return "operation_refused"
    return "write_error"


def _count(
    batch: Batch, letters: list[DeadLetter], blocked: set[TopicPartition], routes: Mapping[str, Route]
) -> None:
    """Per route: records consumed, stored (not blocked, not dead-lettered), and dead-lettered by type."""
    dead_per_tp: dict[TopicPartition, int] = defaultdict(int)
    for letter in letters:
        route = routes[letter.record.topic].name.value
        metrics.RECORDS_DEAD_LETTERED.labels(route, letter.error_type).inc()
        dead_per_tp[_tp(letter)] += 1
    for tp, records in batch.items():
        route = routes[tp.topic].name.value
        metrics.RECORDS_CONSUMED.labels(route).inc(len(records))
        if tp not in blocked:
            metrics.RECORDS_STORED.labels(route).inc(len(records) - dead_per_tp[tp])


def _tp(letter: DeadLetter) -> TopicPartition:
    return TopicPartition(letter.record.topic, letter.record.partition)


def _coordinates(record: Record) -> dict[str, Any]:
    """The Kafka coordinates of a record's log lines, and its W3C trace id when it carries one."""
    fields: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if (trace := trace_id(record.headers)) is not None:
        fields["trace_id"] = trace
    return fields


@dataclass(frozen=True, slots=True)
class UnprocessableLetter(DeadLetter):
    """A dead letter whose preparation raised unexpectedly: `x-error-class` names the exception."""

    error_class: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        return [*DeadLetter.headers(self), ("x-error-class", self.error_class.encode())]


def _error_class(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _rejection_letter(record: Record, dlq_topic: str, refused: Refused) -> DeadLetter:
    if refused.error is None:
        return DeadLetter(record, dlq_topic, refused.error_type, refused.reason, refused.detail)
    return UnprocessableLetter(
        record, dlq_topic, refused.error_type, refused.reason, refused.detail, _error_class(refused.error)
    )


def _log_rejection(letter: DeadLetter, refused: Refused) -> None:
    """Warning for input the contract refuses; error, with the stack, for an unforeseen failure."""
    fields: dict[str, Any] = {
        **_coordinates(letter.record),
        "event_id": refused.event_id,
        "reason": letter.reason,
        "detail": letter.message,
        "dlq_topic": letter.dlq_topic,
    }
    if refused.error is None:
        log.warning("event_rejected", **fields)
        return
    fields.update(error_type=refused.error_type, error_class=_error_class(refused.error))
    log.error("event_rejected", **fields, exc_info=refused.error)


def _log_saved(route: Route, items: list[Prepared], outcome: WriteOutcome) -> None:
    """The canonical line: one per partition of the batch, with offsets and counts."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_partition[item.tp.partition].append(index)
    for partition, indexes in by_partition.items():
        first, last = items[indexes[0]], items[indexes[-1]]
        log.info(
            route.saved_event,
            topic=route.topic,
            partition=partition,
            offset=first.record.offset,
            last_offset=last.record.offset,
            event_id=first.event_id if len(indexes) == 1 else None,
            stored=sum(1 for i in indexes if i not in outcome.skipped and i not in outcome.refused),
            skipped=sum(1 for i in indexes if i in outcome.skipped),
            refused=sum(1 for i in indexes if i in outcome.refused),
        )
