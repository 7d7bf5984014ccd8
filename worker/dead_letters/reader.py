"""Dead-letter partitions read from their start positions up to the end they had when the run began."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.kafka.consumer import TopicPartition

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from worker.pipeline.records import Record

IDLE_POLLS_BEFORE_TRUSTING_END_OFFSETS = 10
IDLE_POLLS_BEFORE_GIVING_UP = 20  # half-second polls without a record: the run stops before its end offsets


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where reading starts instead of the group's position: an offset, or the first record at a time."""

    offset: int | None = None
    time: datetime | None = None


class DeadLetterReader:
    """Assigned dead-letter partitions, read from their start positions to their end at the start.

    The start is `start.time`, else `start.offset`, else the group's committed position (else
    the beginning). The end of a partition is its high watermark as the first fetch reports it.
    (ListOffsets alone is not trusted: some brokers answer the last batch's base offset + 1 there.)
    """

    def __init__(self, consumer: AIOKafkaConsumer, *, max_records: int, start: StartAt | None = None) -> None:
        self._consumer = consumer
        self._max_records = max_records
        self._from = start or StartAt()
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
        if self._from.time is not None:
            millis = int(self._from.time.timestamp() * 1000)
            found = (await self._consumer.offsets_for_times({tp: millis}))[tp]
            # No record at or after the instant: None, or (tansu) offset 0 with timestamp -1.
            if found is None or found.timestamp < 0:
                await self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, found.offset)
            return
        if self._from.offset is not None:
            first = (await self._consumer.beginning_offsets([tp]))[tp]
            self._consumer.seek(tp, max(first, self._from.offset))
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
            chunk = self._below_the_ends(batch)
            if chunk:
                yield chunk

    def _below_the_ends(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The records of `batch` before each partition's end; a partition past its end is paused."""
        chunk = {}
        for tp, records in batch.items():
            kept = [record for record in records if record.offset < self._end[tp]]
            if len(kept) < len(records):
                self._consumer.pause(tp)
            if kept:
                chunk[tp] = kept
                self._next[tp] = max(self._next[tp], kept[-1].offset + 1)
        return chunk

    async def commit(self, chunk: Mapping[TopicPartition, Sequence[Record]]) -> None:
        """Commit, under the reader's group, the position after each partition's last record of `chunk`."""
        await self._consumer.commit({tp: records[-1].offset + 1 for tp, records in chunk.items()})

    async def _advance_positions(self) -> None:
        # Offsets without a record (transaction markers, compaction) still move the position.
        for tp in self._start:
            self._next[tp] = max(self._next[tp], await self._consumer.position(tp))
