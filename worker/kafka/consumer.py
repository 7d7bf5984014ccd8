"""The group consumer as the pipeline uses it: typed, and raising only worker.errors types.

A thin wrapper of the AIOKafkaConsumer built by `worker.kafka.clients.create_consumer`: a poll
survives an undecodable record batch (worker.kafka.undecodable), a failed commit or position
look-up raises TransientError, and the rebalance listener is any object with the two callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from worker.kafka import undecodable
from worker.kafka.errors import converted

__all__ = ["GroupConsumer", "RebalanceCallbacks", "TopicPartition"]


class RebalanceCallbacks(Protocol):
    """What to do when the group takes partitions away from this member, or gives it some."""

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None: ...
    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """aiokafka accepts only its own listener class: this one hands over to the callbacks."""

    def __init__(self, callbacks: RebalanceCallbacks) -> None:
        self._callbacks = callbacks

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._callbacks.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._callbacks.on_partitions_assigned(assigned)


class GroupConsumer:
    """`poll`, `commit`, `seek`, `pause`, `resume` and the lag's look-ups of one group member."""

    def __init__(
        self, consumer: AIOKafkaConsumer, *, offset_reset: Literal["earliest", "latest"] = "earliest"
    ) -> None:
        self._consumer = consumer
        self._offset_reset = offset_reset

    def subscribe(self, topics: list[str], callbacks: RebalanceCallbacks) -> None:
        self._consumer.subscribe(topics=topics, listener=_Listener(callbacks))

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def poll(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """A batch of records; an undecodable record batch pauses its partition instead of raising."""
        return await converted(
            undecodable.poll(
                self._consumer,
                timeout_ms=timeout_ms,
                max_records=max_records,
                offset_reset=self._offset_reset,
            )
        )

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit `offsets` (the next offset to read per partition); TransientError if the group refuses."""
        await converted(self._consumer.commit(dict(offsets)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)

    def pause(self, *partitions: TopicPartition) -> None:
        self._consumer.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._consumer.resume(*partitions)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end as last fetched (None before the first fetch)."""
        return self._consumer.highwater(tp)  # type: ignore[no-any-return]

    async def position(self, tp: TopicPartition) -> int:
        """The next offset to read; TransientError if the partition was revoked meanwhile."""
        return await converted(self._consumer.position(tp))
