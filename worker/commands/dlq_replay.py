"""`persistence-worker dlq replay`: dead-lettered records back to their source topic, or into MongoDB.

Reads each chosen dead-letter topic from a start position up to the end it had when the
run began (records dead-lettered again meanwhile wait for the next run: nothing loops),
with a consumer from the worker's factory (same fetch bounds; no record held beyond the batch
in hand); a run that stops before those ends exits 1. It keeps the records whose
`x-error-type` was asked for, and either
  - re-publishes each one's original key, value and headers to its source topic (acks=all);
    the worker then stores it, and its idempotent writers store a record replayed twice once; or
  - with --direct, validates and writes it through the worker's own BatchProcessor and
    writers. A record that fails validation again stays in the dead-letter topic and is
    counted as still dead; it is not dead-lettered a second time.
Offsets are committed per batch under the run's own consumer group (by default
`<KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]`), so the next run continues where this
one stopped; `--from-offset` / `--from-time` start elsewhere. A batch that cannot be
delivered (Kafka or MongoDB down) is not committed and ends the run.

Headers: ours (`x-error-*`, `x-source-*`, `x-failed-at`, see worker.pipeline.dead_letters) are removed, so the
record goes back as its producer sent it, and `x-replayed-from: <topic>:<partition>:<offset>`
is added; if it is dead-lettered again it keeps that trace.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from worker.app import batch_processor, routes_for
from worker.commands.progress import Tally, reporting
from worker.commands.replay import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, StopOnSignals
from worker.errors import WorkerError
from worker.kafka.clients import ProducerPurpose, create_consumer, create_producer
from worker.mongo.gateway import gateway_for
from worker.mongo.indexes import ensure_indexes, with_retention
from worker.pipeline.batch import BatchProcessor
from worker.pipeline.dead_letters import ERROR_TYPE_PERSIST_FAILED, DeadLetter, DeadLetterPublisher
from worker.pipeline.records import Record
from worker.settings import RouteName, Settings

DEAD_LETTER_HEADER_PREFIXES = ("x-error-", "x-source-", "x-failed-at")  # as pipeline.dead_letters writes
REPLAYED_FROM_HEADER = "x-replayed-from"
SAMPLE_ROWS = 10
IDLE_POLLS_BEFORE_TRUSTING_END_OFFSETS = 10
IDLE_POLLS_BEFORE_GIVING_UP = 20  # half-second polls without a record: the run ends incomplete (exit 1)


@dataclass(frozen=True, slots=True)
class DlqReplayOptions:
    routes: tuple[RouteName, ...] = tuple(RouteName)
    error_types: frozenset[str] = frozenset()
    """Empty: every error type."""
    from_offset: int | None = None
    from_time: datetime | None = None
    direct: bool = False
    dry_run: bool = False
    group: str | None = None

    def group_for(self, settings: Settings) -> str:
        if self.group:
            return self.group
        suffix = "-" + "+".join(sorted(self.error_types)) if self.error_types else ""
        return f"{settings.kafka_consumer_group}-dlq-replay{suffix}"


def error_type(record: Record) -> str:
    return _header(record, "x-error-type") or "unknown"


def _header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


def replay_headers(record: Record) -> list[tuple[str, bytes]]:
    """The record's headers without ours, plus where it was replayed from."""
    kept = [(k, bytes(v)) for k, v in record.headers if not k.startswith(DEAD_LETTER_HEADER_PREFIXES)]
    kept = [(k, v) for k, v in kept if k != REPLAYED_FROM_HEADER]
    origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
    return [*kept, (REPLAYED_FROM_HEADER, origin)]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A dead letter as the worker first saw it: source topic and coordinates, original headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @classmethod
    def of(cls, record: Record, source_topic: str) -> SourceRecord:
        def number(name: str, default: int) -> int:
            text = _header(record, name)
            return int(text) if text is not None and text.isdigit() else default

        return cls(
            topic=source_topic,
            partition=number("x-source-partition", record.partition),
            offset=number("x-source-offset", record.offset),
            key=record.key,
            value=record.value,
            headers=replay_headers(record),
        )


class KeptDeadLetters(DeadLetterPublisher):
    """For --direct: the records are dead letters already; collect what would be sent again."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


@dataclass(slots=True)
class Summary:
    read: int = 0
    replayed: int = 0
    still_dead: Counter[str] = field(default_factory=Counter)
    not_chosen: int = 0
    per_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(dead-letter topic, error type) -> chosen records read."""
    sample: list[Record] = field(default_factory=list)
    error: str | None = None

    def tally(self) -> Tally:
        return Tally(sent=self.replayed, failed=sum(self.still_dead.values()), skipped=self.not_chosen)


class BatchFailed(Exception):
    """A batch could not be replayed (Kafka or MongoDB unavailable); it is not committed."""


class DeadLetterReader:
    """Assigned dead-letter partitions, read from their start positions to their end at the start.

    The end of a partition is its high watermark as the first fetch reports it. (ListOffsets
    alone is not trusted: some brokers answer the last batch's base offset + 1 there.)
    """

    def __init__(self, consumer: AIOKafkaConsumer, options: DlqReplayOptions, max_records: int) -> None:
        self._consumer = consumer
        self._options = options
        self._max_records = max_records
        self._guess: dict[TopicPartition, int] = {}
        self._end: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}
        self._start: dict[TopicPartition, int] = {}

    async def open(self, topics: Iterable[str]) -> list[str]:
        """Assign and position every partition of `topics`; the topics that do not exist."""
        await self._consumer.topics()  # refreshes the metadata
        partitions, missing = [], []
        for topic in topics:
            numbers = self._consumer.partitions_for_topic(topic)
            if not numbers:
                missing.append(topic)
            partitions += [TopicPartition(topic, number) for number in sorted(numbers or ())]
        self._consumer.assign(partitions)
        for tp in partitions:
            await self._seek_start(tp)
            self._start[tp] = self._next[tp] = await self._consumer.position(tp)
        self._guess = await self._consumer.end_offsets(partitions) if partitions else {}
        return missing

    async def _seek_start(self, tp: TopicPartition) -> None:
        if self._options.from_time is not None:
            millis = int(self._options.from_time.timestamp() * 1000)
            found = (await self._consumer.offsets_for_times({tp: millis}))[tp]
            # No record at or after the instant: None, or (tansu) offset 0 with timestamp -1.
            if found is None or found.timestamp < 0:
                await self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, found.offset)
            return
        if self._options.from_offset is not None:
            first = (await self._consumer.beginning_offsets([tp]))[tp]
            self._consumer.seek(tp, max(first, self._options.from_offset))
            return
        committed = await self._consumer.committed(tp)
        if committed is None:
            await self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, committed)

    async def measure(self) -> int:
        """Learn every partition's end; the records to read. Holds no record.

        A partition whose fetch brought records has its end (the fetch's high watermark): it is
        sought back to its start and paused, so what was fetched is read again, in order, by
        `batches()`; memory stays within the consumer's fetch bounds however long this takes.
        """
        idle = 0
        while len(self._end) < len(self._start):
            batch = await self._consumer.getmany(timeout_ms=300, max_records=self._max_records)
            idle = 0 if batch else idle + 1
            self._learn_ends(trust_guess=idle >= IDLE_POLLS_BEFORE_TRUSTING_END_OFFSETS)
            for tp in batch:
                self._consumer.seek(tp, self._start[tp])
                self._consumer.pause(tp)
        self._consumer.resume(*self._start)
        return sum(max(0, self._end[tp] - start) for tp, start in self._start.items())

    def shortfall(self) -> dict[str, int]:
        """Per partition not read to its end: how many offsets are left."""
        return {
            f"{tp.topic}:{tp.partition}": self._end[tp] - self._next[tp]
            for tp in self._start
            if self._next[tp] < self._end[tp]
        }

    def _learn_ends(self, *, trust_guess: bool) -> None:
        for tp in self._start:
            if tp in self._end:
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._end[tp] = max(highwater, self._guess.get(tp, 0))
            elif trust_guess:
                self._end[tp] = self._guess.get(tp, 0)

    def finished(self) -> bool:
        return all(self._next[tp] >= self._end[tp] for tp in self._start)

    async def batches(self) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
        """Batches of records below each partition's end, in offset order per partition."""
        idle = 0
        while not self.finished() and idle < IDLE_POLLS_BEFORE_GIVING_UP:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            idle = 0 if batch else idle + 1
            await self._advance_positions()
            chunk = {}
            for tp, records in batch.items():
                kept = [record for record in records if record.offset < self._end[tp]]
                if len(kept) < len(records):
                    self._consumer.pause(tp)
                if kept:
                    chunk[tp] = kept
                    self._next[tp] = max(self._next[tp], kept[-1].offset + 1)
            if chunk:
                yield chunk

    async def _advance_positions(self) -> None:
        # Offsets without a record (transaction markers, compaction) still move the position.
        for tp in self._start:
            self._next[tp] = max(self._next[tp], await self._consumer.position(tp))


class Republisher:
    """Sends each record to its source topic and waits for every acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, sources: Mapping[str, str]) -> None:
        self._producer = producer
        self._sources = sources

    async def replay(self, records: Sequence[Record]) -> tuple[int, Counter[str]]:
        try:
            sends = [
                await self._producer.send(
                    self._sources[r.topic], value=r.value, key=r.key, headers=replay_headers(r)
                )
                for r in records
            ]
            await asyncio.gather(*sends)
        except KafkaError as exc:
            raise BatchFailed(f"Kafka: {type(exc).__name__}: {exc}") from exc
        return len(records), Counter()


class DirectWriter:
    """Validates and writes records through the worker's BatchProcessor and writers."""

    def __init__(
        self, processor: BatchProcessor, letters: KeptDeadLetters, sources: Mapping[str, str]
    ) -> None:
        self._processor = processor
        self._letters = letters
        self._sources = sources

    async def replay(self, records: Sequence[Record]) -> tuple[int, Counter[str]]:
        batch: dict[TopicPartition, list[SourceRecord]] = defaultdict(list)
        for record in records:
            source = SourceRecord.of(record, self._sources[record.topic])
            batch[TopicPartition(source.topic, source.partition)].append(source)
        self._letters.letters.clear()
        try:
            result = await self._processor.process(batch)
        except WorkerError as exc:
            raise BatchFailed(f"MongoDB: {exc}") from exc
        letters = self._letters.letters
        unwritten = [letter for letter in letters if letter.error_type == ERROR_TYPE_PERSIST_FAILED]
        if result.blocked or unwritten:
            detail = unwritten[0].message if unwritten else "a fail-closed route could not write"
            raise BatchFailed(f"MongoDB: {detail}")
        still_dead = Counter(f"{letter.error_type}:{letter.reason}" for letter in letters)
        return result.stored, still_dead


Target = Republisher | DirectWriter


async def dlq_replay_command(settings: Settings, options: DlqReplayOptions) -> int:
    """Exit 0 if every chosen record was replayed, 1 if not, 3 if unreachable, 130 if interrupted."""
    inputs = [settings.topic_for(route) for route in options.routes]
    sources = {settings.dlq_topic(topic): topic for topic in inputs}
    consumer = create_consumer(settings, group_id=options.group_for(settings), auto_offset_reset="earliest")
    closers: list[Any] = [consumer.stop]
    try:
        try:
            await consumer.start()
            reader = DeadLetterReader(consumer, options, settings.kafka_max_batch_records)
            missing = await reader.open(sources)
            target = None if options.dry_run else await _open_target(settings, options, sources, closers)
        except (KafkaError, WorkerError) as exc:
            print(f"error: cannot reach the servers: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        for topic in missing:
            print(f"note: {topic} does not exist; nothing to replay from it", file=sys.stderr)
        return await _replay(consumer, reader, target, options, settings)
    finally:
        for close in reversed(closers):
            await close()


async def _open_target(
    settings: Settings, options: DlqReplayOptions, sources: Mapping[str, str], closers: list[Any]
) -> Target:
    if not options.direct:
        producer = create_producer(settings, purpose=ProducerPurpose.REPUBLISH)
        closers.append(producer.stop)
        await producer.start()
        return Republisher(producer, sources)
    gateway = gateway_for(settings)
    closers.append(gateway.close)
    database = await gateway.connect()
    await ensure_indexes(database, with_retention(settings.ttl_days()))
    letters = KeptDeadLetters()
    routes = routes_for(settings, gateway)
    processor = batch_processor(settings, routes, letters)
    return DirectWriter(processor, letters, sources)


async def _replay(
    consumer: AIOKafkaConsumer,
    reader: DeadLetterReader,
    target: Target | None,
    options: DlqReplayOptions,
    settings: Settings,
) -> int:
    summary = Summary()
    stop = asyncio.Event()
    total = await reader.measure()
    with StopOnSignals(stop), reporting("dlq replay", total, silent=options.dry_run) as reporter:
        async for chunk in reader.batches():
            await _handle(chunk, consumer, target, options, summary)
            reporter.update(summary.tally())
            if summary.error or stop.is_set():
                break
    interrupted = stop.is_set() and not reader.finished()
    if not interrupted and summary.error is None and not reader.finished():
        summary.error = f"stopped before the end offsets it set out to reach: left {reader.shortfall()}"
    if options.dry_run:
        print_dry_run(summary, total)
        if summary.error:
            print(f"error: {summary.error}", file=sys.stderr)
        return EXIT_OK if summary.error is None else EXIT_INCOMPLETE
    return _finish(summary, options, settings, interrupted=interrupted)


async def _handle(
    chunk: Mapping[TopicPartition, list[Any]],
    consumer: AIOKafkaConsumer,
    target: Target | None,
    options: DlqReplayOptions,
    summary: Summary,
) -> None:
    chosen = [record for records in chunk.values() for record in records if _choose(record, options, summary)]
    if target is None:
        return
    try:
        if chosen:
            replayed, still_dead = await target.replay(chosen)
            summary.replayed += replayed
            summary.still_dead.update(still_dead)
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in chunk.items()})
    except BatchFailed as exc:
        summary.error = f"{exc} (this batch is not committed: run again once it is fixed)"
    except KafkaError as exc:
        summary.error = f"commit failed: {type(exc).__name__}: {exc} (the batch may be replayed again)"


def _choose(record: Record, options: DlqReplayOptions, summary: Summary) -> bool:
    summary.read += 1
    kind = error_type(record)
    if options.error_types and kind not in options.error_types:
        summary.not_chosen += 1
        return False
    summary.per_type[(record.topic, kind)] += 1
    if len(summary.sample) < SAMPLE_ROWS:
        summary.sample.append(record)
    return True


def _finish(summary: Summary, options: DlqReplayOptions, settings: Settings, *, interrupted: bool) -> int:
    mode = "direct to MongoDB" if options.direct else "re-published to the source topics"
    chosen = sum(summary.per_type.values())
    dead = sum(summary.still_dead.values())
    print(f"dlq replay {'interrupted' if interrupted else 'done'}: read={summary.read} chosen={chosen} "
          f"replayed={summary.replayed} still_dead={dead} not_chosen={summary.not_chosen} "
          f"({mode}; group {options.group_for(settings)})")  # fmt: skip
    for reason, count in sorted(summary.still_dead.items()):
        print(f"  still dead: {count} x {reason} (left in the dead-letter topic)")
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.error is None and dead == 0 else EXIT_INCOMPLETE


def print_dry_run(summary: Summary, total: int) -> None:
    from rich.console import Console
    from rich.table import Table

    chosen = sum(summary.per_type.values())
    print(f"dry run: {total} dead-lettered record(s) to read, {chosen} chosen, "
          f"{summary.not_chosen} not chosen; nothing sent, nothing committed")  # fmt: skip
    if not chosen:
        return
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    counts = Table("dead-letter topic", "error type", "records", title="chosen per error type",
                   title_justify="left")  # fmt: skip
    for (topic, kind), count in sorted(summary.per_type.items()):
        counts.add_row(topic, kind, str(count))
    console.print(counts)
    sample = Table("topic", "partition", "offset", "error type", "reason", "message", "key",
                   title=f"first {len(summary.sample)} chosen", title_justify="left")  # fmt: skip
    for record in summary.sample:
        key = bytes(record.key).decode("utf-8", "replace") if record.key is not None else ""
        reason = _header(record, "x-error-reason") or ""
        message = (_header(record, "x-error-message") or "")[:60]
        sample.add_row(record.topic, str(record.partition), str(record.offset), error_type(record),
                       reason, message, key)  # fmt: skip
    console.print(sample)
