"""Dead-letter replay (`dlq replay`): dead-lettered records back to their source topic, or into MongoDB.

Reads each chosen dead-letter topic from a start position up to the end it had when the
run began (records dead-lettered again meanwhile wait for the next run: nothing loops),
with a consumer from the worker's factory (same fetch bounds; no record held beyond the batch
in hand); a run that stops before those ends says so in its summary's error. It keeps the
records whose `x-error-type` was asked for, and either
  - re-publishes each one's original key, value and headers to its source topic (acks=all);
    the worker then stores it, and its idempotent writers store a record replayed twice once; or
  - with `direct`, validates and writes it through the worker's own BatchProcessor and
    writers. A record that fails validation again stays in the dead-letter topic and is
    counted as still dead; it is not dead-lettered a second time.
Offsets are committed per batch under the run's own consumer group (by default
`<KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]`), so the next run continues where this
one stopped; `from_offset` / `from_time` start elsewhere. A batch that cannot be delivered
(Kafka or MongoDB down, or refusing us) is not committed and ends the run. The pieces: reader
(positions and ends), headers (what a dead letter says), targets (re-publish or write).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from worker.dead_letters.headers import error_type
from worker.dead_letters.reader import DeadLetterReader, StartAt
from worker.dead_letters.targets import (
    BatchFailed,
    ProcessorFactory,
    Target,
    open_direct_writer,
    open_republisher,
)
from worker.errors import OperationRefused
from worker.kafka.clients import create_consumer
from worker.kafka.consumer import TopicPartition
from worker.kafka.diagnose import KafkaRefused, KafkaUnavailable, kafka_errors
from worker.pipeline.records import Record
from worker.settings import RouteName, Settings

SAMPLE_ROWS = 10


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

    def sources(self, settings: Settings) -> dict[str, str]:
        """Dead-letter topic -> the input topic its records came from, for the chosen routes."""
        inputs = [settings.topic_for(route) for route in self.routes]
        return {settings.dlq_topic(topic): topic for topic in inputs}


@dataclass(slots=True)
class Summary:
    """What a run read and did; its progress reads `replayed=.. still_dead=.. not_chosen=..`."""

    per_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(dead-letter topic, error type) -> chosen records read."""
    sample: list[Record] = field(default_factory=list)
    read: int = 0
    """Records read below the ends, chosen or not."""
    not_chosen: int = 0
    replayed: int = 0
    still_dead: Counter[str] = field(default_factory=Counter)
    """"error type:reason" -> chosen records that failed again (direct)."""
    error: str | None = None
    refused: bool = False
    """The run ended because a server refused us."""
    interrupted: bool = False
    """Stopped on request before the ends were reached."""

    @property
    def chosen(self) -> int:
        return sum(self.per_type.values())

    @property
    def dead_again(self) -> int:
        """Chosen records that failed again (the sum of `still_dead`)."""
        return sum(self.still_dead.values())

    @property
    def done(self) -> int:
        return self.replayed + self.dead_again + self.not_chosen

    def describe(self) -> str:
        return f"replayed={self.replayed} still_dead={self.dead_again} not_chosen={self.not_chosen}"

    def choose(self, record: Record, error_types: frozenset[str]) -> bool:
        """Count a record read; True if its error type is chosen (then counted per type, the first
        SAMPLE_ROWS kept as a sample)."""
        self.read += 1
        kind = error_type(record)
        if error_types and kind not in error_types:
            self.not_chosen += 1
            return False
        self.per_type[(record.topic, kind)] += 1
        if len(self.sample) < SAMPLE_ROWS:
            self.sample.append(record)
        return True


class Progress(Protocol):
    def update(self, summary: Summary) -> None: ...


class DeadLetterReplay:
    """One run's clients: a reader over the chosen dead-letter topics, and where their records go."""

    def __init__(
        self, settings: Settings, options: DlqReplayOptions, processor_for: ProcessorFactory
    ) -> None:
        self._settings = settings
        self._options = options
        self._processor_for = processor_for
        self._sources = options.sources(settings)
        group = options.group_for(settings)
        self._consumer = create_consumer(settings, group_id=group, auto_offset_reset="earliest")
        self._closing = AsyncExitStack()
        self._closing.push_async_callback(self._consumer.stop)
        start = StartAt(offset=options.from_offset, time=options.from_time)
        self.reader = DeadLetterReader(
            self._consumer, max_records=settings.kafka_max_batch_records, start=start
        )
        self.target: Target | None = None
        """None for a dry run."""

    async def open(self) -> list[str]:
        """Position the reader and open the target; the dead-letter topics that do not exist.

        Raises KafkaUnavailable or KafkaRefused for Kafka, WorkerError for MongoDB (direct).
        """
        with kafka_errors(self._settings):
            await self._consumer.start()
            missing = await self.reader.open(self._sources)
        if self._options.dry_run:
            return missing
        if self._options.direct:
            self.target = await open_direct_writer(
                self._settings, self._sources, self._closing, self._processor_for
            )
        else:
            self.target = await open_republisher(self._settings, self._sources, self._closing)
        return missing

    async def close(self) -> None:
        await self._closing.aclose()

    async def run(self, progress: Progress, stop: asyncio.Event) -> Summary:
        """Replay up to the ends the reader measured (`reader.measure()` first)."""
        return await replay_records(self.reader, self.target, self._options, self._settings,
                                    progress=progress, stop=stop)  # fmt: skip


async def replay_records(
    reader: DeadLetterReader,
    target: Target | None,
    options: DlqReplayOptions,
    settings: Settings,
    *,
    progress: Progress,
    stop: asyncio.Event,
) -> Summary:
    """Replay and commit batch by batch (with no target: count only); ends at the first batch that
    fails, or with the batch in hand once `stop` is set."""
    summary = Summary()
    async for chunk in reader.batches():
        await _replay_chunk(chunk, reader, target, options, summary, settings)
        progress.update(summary)
        if summary.error or stop.is_set():
            break
    summary.interrupted = stop.is_set() and not reader.finished()
    if not summary.interrupted and summary.error is None and not reader.finished():
        summary.error = f"stopped before the end offsets it set out to reach: left {reader.shortfall()}"
    return summary


async def _replay_chunk(
    chunk: Mapping[TopicPartition, Sequence[Record]],
    reader: DeadLetterReader,
    target: Target | None,
    options: DlqReplayOptions,
    summary: Summary,
    settings: Settings,
) -> None:
    chosen = [
        record
        for records in chunk.values()
        for record in records
        if summary.choose(record, options.error_types)
    ]
    if target is None:
        return
    try:
        if chosen:
            replayed, still_dead = await target.replay(chosen)
            summary.replayed += replayed
            summary.still_dead.update(still_dead)
        with kafka_errors(settings):
            await reader.commit(chunk)
    except BatchFailed as exc:
        summary.error = f"{exc} (this batch is not committed: run again once it is fixed)"
        summary.refused = exc.refused
    except (KafkaUnavailable, KafkaRefused) as exc:
        summary.error = f"commit failed: {exc} (the batch may be replayed again)"
        summary.refused = isinstance(exc, OperationRefused)
