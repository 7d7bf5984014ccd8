"""The pipeline's record types: a Kafka record as read, a polled batch, a record ready to write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from worker.kafka.consumer import TopicPartition
from worker.ops.trace import trace_id


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


class Prepared(NamedTuple):
    """A record whose document is ready to write (a tuple: one is made per record)."""

    tp: TopicPartition
    record: Record
    document: Mapping[str, Any]
    event_id: str | None


def source_of(record: Record) -> TopicPartition:
    """The partition a record was read from."""
    return TopicPartition(record.topic, record.partition)


def coordinates(record: Record) -> dict[str, Any]:
    """The Kafka coordinates of a record's log lines, and its W3C trace id when it carries one."""
    fields: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if (trace := trace_id(record.headers)) is not None:
        fields["trace_id"] = trace
    return fields
