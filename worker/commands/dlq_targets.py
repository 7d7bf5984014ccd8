"""Where `dlq replay` sends the chosen records: back to their source topics, or straight to MongoDB."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from worker.commands.dlq_records import SourceRecord, replay_headers
from worker.errors import OperationRefused, WorkerError
from worker.kafka.failures import kafka_errors
from worker.pipeline.batch import BatchProcessor
from worker.pipeline.dead_letters import ERROR_TYPE_PERSIST_FAILED, DeadLetter, DeadLetterPublisher
from worker.pipeline.records import Record
from worker.settings import Settings


class BatchFailed(Exception):
    """A batch could not be replayed (Kafka or MongoDB unavailable, or refusing us); it is not committed."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


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
