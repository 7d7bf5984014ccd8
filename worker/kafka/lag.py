"""The consumer lag gauge: per assigned partition, high watermark minus committed offset."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from worker.errors import WorkerError
from worker.ops.metrics import CONSUMER_LAG, LAST_COMMIT_TIMESTAMP

POSITION_TIMEOUT_S = 1.0
"""How long `publish` waits for a position look-up: aiokafka's can wait for the group coordinator,
which may not answer while the broker is away; the consumer loop waits for `publish`."""


class _Record(Protocol):
    @property
    def offset(self) -> int: ...


class _LagSource(Protocol):
    """The part of AIOKafkaConsumer the lag gauge reads."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...


class CommitLag:
    """`persistence_consumer_lag_records` per assigned partition: high watermark minus committed offset.

    The committed offset is the one this consumer last committed; before its first commit on a
    partition, the offset it started reading from (the group's commit, or the reset position).
    """

    def __init__(self) -> None:
        self._committed: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}
        self._revokes = 0  # forget() calls so far: `publish` sees whether one ran during its awaits

    def saw(self, batch: Mapping[TopicPartition, Sequence[_Record]]) -> None:
        """A polled batch: a partition's first records start where its committed offset is.

        The gauge counts the batch in hand at once: a batch that never finishes (a write that
        hangs) must show as lag, not as the 0 published after the last commit.
        """
        for tp, records in batch.items():
            if records:
                self._committed.setdefault(tp, records[0].offset)
                highwater = max(records[-1].offset + 1, self._highwater.get(tp, 0))
                lag = max(highwater - self._committed[tp], 0)
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Offsets this consumer committed just now: also the partitions' last commit time."""
        self._committed.update(offsets)
        now = time.time()
        for tp in offsets:
            LAST_COMMIT_TIMESTAMP.labels(topic=tp.topic, partition=str(tp.partition)).set(now)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked partitions: their lag is another member's now."""
        self._revokes += 1
        for tp in partitions:
            self._committed.pop(tp, None)
            self._highwater.pop(tp, None)
            for gauge in (CONSUMER_LAG, LAST_COMMIT_TIMESTAMP):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    def records(self, topic: str, *, leaving_out: Iterable[TopicPartition] = ()) -> int:
        """The lag summed over the topic's partitions whose high watermark is known, but those left out."""
        skipped = set(leaving_out)
        return sum(
            max(highwater - self._committed.get(tp, highwater), 0)
            for tp, highwater in self._highwater.items()
            if tp.topic == topic and tp not in skipped
        )

    async def publish(self, consumer: _LagSource) -> None:
        """Set the gauge of every assigned partition whose high watermark is known.

        A position look-up that does not answer within POSITION_TIMEOUT_S ends this round (the
        partitions left keep their last value): the loop polls again, and a stop is not delayed.
        So does a revoke during a look-up: the assignment read at the start is stale, and what
        the look-up found must not put a forgotten partition back.
        """
        revokes = self._revokes
        for tp in consumer.assignment():
            try:
                read = await self._read(consumer, tp)
            except TimeoutError:
                return
            if self._revokes != revokes:  # a revoke ran during the look-up
                return
            if read is not None:
                self._set(tp, *read)

    async def _read(self, consumer: _LagSource, tp: TopicPartition) -> tuple[int, int] | None:
        """`tp`'s committed offset and high watermark; None before its first fetch or once revoked.

        Before any record of `tp` was handed out, its committed offset is its position (looked up).
        """
        try:
            highwater = consumer.highwater(tp)
            if highwater is None:  # not fetched yet
                return None
            if tp in self._committed:
                return self._committed[tp], highwater
            return await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S), highwater
        except (AssertionError, KafkaError, WorkerError):  # revoked meanwhile: the listener forgets it
            return None

    def _set(self, tp: TopicPartition, committed: int, highwater: int) -> None:
        self._committed.setdefault(tp, committed)
        self._highwater[tp] = highwater
        lag = max(highwater - self._committed[tp], 0)
        CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
