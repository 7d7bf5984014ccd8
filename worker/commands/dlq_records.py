"""A dead letter as `dlq replay` reads it: its error type, and the record as its producer first sent it.

The header names are those worker.pipeline.dead_letters writes. Ours (`x-error-*`, `x-source-*`,
`x-failed-at`) are removed on the way back, and `x-replayed-from: <topic>:<partition>:<offset>`
is added; a record dead-lettered again keeps that trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.pipeline.dead_letters import (
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_REASON,
    HEADER_ERROR_TYPE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    OUR_HEADER_PREFIXES,
)
from worker.pipeline.records import Record

DEAD_LETTER_HEADER_PREFIXES = OUR_HEADER_PREFIXES
ERROR_TYPE_HEADER = HEADER_ERROR_TYPE
ERROR_REASON_HEADER = HEADER_ERROR_REASON
ERROR_MESSAGE_HEADER = HEADER_ERROR_MESSAGE
SOURCE_PARTITION_HEADER = HEADER_SOURCE_PARTITION
SOURCE_OFFSET_HEADER = HEADER_SOURCE_OFFSET
REPLAYED_FROM_HEADER = "x-replayed-from"
UNKNOWN_ERROR_TYPE = "unknown"
"""The error type of a record without `x-error-type`."""


def header(record: Record, name: str) -> str | None:
    """The first header called `name`, decoded (None when absent)."""
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


def error_type(record: Record) -> str:
    return header(record, ERROR_TYPE_HEADER) or UNKNOWN_ERROR_TYPE


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
            text = header(record, name)
            return int(text) if text is not None and text.isdigit() else default

        return cls(
            topic=source_topic,
            partition=number(SOURCE_PARTITION_HEADER, record.partition),
            offset=number(SOURCE_OFFSET_HEADER, record.offset),
            key=record.key,
            value=record.value,
            headers=replay_headers(record),
        )
