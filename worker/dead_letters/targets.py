"""Where a dead-letter replay sends the chosen records: back to their source topics, or into MongoDB."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.dead_letters.headers import (
    ERROR_TYPE_PERSIST_FAILED,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    header,
    replay_headers,
)
from worker.dead_letters.letters import DeadLetter
from worker.dead_letters.publisher import DeadLetterPublisher
from worker.errors import OperationRefused, WorkerError
from worker.kafka.clients import ProducerPurpose, create_producer
from worker.kafka.consumer import TopicPartition
from worker.kafka.diagnose import kafka_errors
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.mongo.indexes import ensure_indexes, expected_indexes
from worker.pipeline.records import Record
from worker.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from worker.pipeline.batch import BatchProcessor

ProcessorFactory = Callable[[MongoGateway, DeadLetterPublisher], "BatchProcessor"]
"""Builds the worker's BatchProcessor on a connected gateway, dead-lettering to the given publisher."""


class BatchFailed(Exception):
    """A batch could not be replayed (Kafka or MongoDB unavailable, or refusing us); it is not committed."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


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
            text = header(record, name)
            return int(text) if text is not None and text.isdigit() else default

        return cls(
            topic=source_topic,
            partition=number(HEADER_SOURCE_PARTITION, record.partition),
            offset=number(HEADER_SOURCE_OFFSET, record.offset),
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


class Republisher:
    """Sends each record to its source topic and waits for every acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, sources: Mapping[str, str], settings: Settings) -> None:
        self._producer = producer
        self._sources = sources
        self._settings = settings

    async def replay(self, records: Sequence[Record]) -> tuple[int, Counter[str]]:
        try:
            with kafka_errors(self._settings):
                sends = [
                    await self._producer.send(
                        self._sources[r.topic], value=r.value, key=r.key, headers=replay_headers(r)
                    )
                    for r in records
                ]
                await asyncio.gather(*sends)
        except WorkerError as exc:
            raise BatchFailed(f"Kafka: {exc}", refused=isinstance(exc, OperationRefused)) from exc
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
            raise BatchFailed(f"MongoDB: {exc}", refused=isinstance(exc, OperationRefused)) from exc
        letters = self._letters.letters
        unwritten = [letter for letter in letters if letter.error_type == ERROR_TYPE_PERSIST_FAILED]
        if result.blocked or unwritten:
            detail = unwritten[0].message if unwritten else "a fail-closed route could not write"
            raise BatchFailed(f"MongoDB: {detail}")
        still_dead = Counter(f"{letter.error_type}:{letter.reason}" for letter in letters)
        return result.stored, still_dead


Target = Republisher | DirectWriter


async def open_republisher(
    settings: Settings, sources: Mapping[str, str], closing: AsyncExitStack
) -> Republisher:
    """A started producer for the source topics (stopped by `closing`); KafkaUnavailable/KafkaRefused."""
    producer = create_producer(settings, purpose=ProducerPurpose.REPUBLISH)
    closing.push_async_callback(producer.stop)
    with kafka_errors(settings):
        await producer.start()
    return Republisher(producer, sources, settings)


async def open_direct_writer(
    settings: Settings, sources: Mapping[str, str], closing: AsyncExitStack, processor_for: ProcessorFactory
) -> DirectWriter:
    """A writer on a connected MongoDB with the expected indexes (closed by `closing`); WorkerError."""
    gateway = gateway_for(settings)
    closing.push_async_callback(gateway.close)
    database = await gateway.connect()
    await ensure_indexes(database, expected_indexes(settings))
    letters = KeptDeadLetters()
    return DirectWriter(processor_for(gateway, letters), letters, sources)
