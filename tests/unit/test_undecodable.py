"""worker.kafka.undecodable.poll: an undecodable batch pauses its partition; other errors pass through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedCodecError
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from worker.kafka.undecodable import is_decode_error, poll

GOOD, BAD = TopicPartition("in", 0), TopicPartition("in", 1)


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int


@dataclass
class FakeConsumer:
    """Two partitions of 4 records; BAD cannot decode from `bad_from` on; a whole-batch poll raises `error`."""

    error: Exception
    bad_from: int | None = 2
    positions: dict[TopicPartition, int] = field(default_factory=lambda: {GOOD: 0, BAD: 0})
    paused_set: set[TopicPartition] = field(default_factory=set)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return {GOOD, BAD}

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return 4

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set.update(tps)

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if not tps:
            self.positions[GOOD] = 4  # drained, then lost with the exception, as aiokafka does
            raise self.error
        [tp] = tps
        offset = self.positions[tp]
        if offset >= 4:
            return {}
        if tp == BAD and self.bad_from is not None and offset >= self.bad_from:
            raise self.error
        self.positions[tp] = offset + 1
        return {tp: [FakeRecord(tp.topic, tp.partition, offset)]}


def test_codec_and_corruption_errors_are_decode_errors_and_broker_errors_are_not() -> None:
    """UnsupportedCodecError and a decompressor's own error count as decoding; a connection error does not."""
    assert is_decode_error(UnsupportedCodecError("snappy"))
    assert is_decode_error(ValueError("bad lz4 frame"))
    assert not is_decode_error(KafkaConnectionError("down"))


async def test_records_before_the_bad_batch_are_handed_out_and_its_partition_paused_at_it() -> None:
    """The good partition's records and the bad one's up to the batch come back; the bad partition is paused at offset 2."""
    consumer = FakeConsumer(error=UnsupportedCodecError("Libraries for snappy compression codec not found"))
    before = REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": "in"}) or 0.0

    batch = await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]

    assert {tp: [r.offset for r in records] for tp, records in batch.items()} == {
        GOOD: [0, 1, 2, 3],
        BAD: [0, 1],
    }
    assert consumer.paused_set == {BAD}
    assert consumer.positions[BAD] == 2
    assert (GOOD, 0) in consumer.seeks, "what the failed poll drained is read again"
    assert REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": "in"}) == before + 1


async def test_an_error_no_partition_raises_alone_is_raised() -> None:
    """When every partition reads fine on its own the original error is raised, not swallowed."""
    consumer = FakeConsumer(error=ValueError("not about decoding"), bad_from=None)
    with pytest.raises(ValueError, match="not about decoding"):
        await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]


async def test_a_broker_error_passes_through_untouched() -> None:
    """A KafkaError other than decoding leaves poll as it came, with nothing sought or paused."""
    consumer = FakeConsumer(error=KafkaConnectionError("down"))
    with pytest.raises(KafkaConnectionError):
        await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]
    assert consumer.seeks == [] and consumer.paused_set == set()
