"""The dead-letter headers: every name and every x-error-type value once, and their readers.

A dead letter carries (all UTF-8):
    x-error-type       validation | unprocessable | persist_failed | persist_refused (ERROR_TYPES)
    x-error-reason     a stable code (not_json, schema_violation, ...)
    x-error-message    the human-readable detail, credentials scrubbed
    x-error-class      with unprocessable: the exception class that preparation raised
    x-trace-id         the W3C trace id, when the record carried a `traceparent` header
    x-source-topic, x-source-partition, x-source-offset
    x-failed-at        ISO-8601 UTC
    x-truncated        "true" when the value is cut (the whole record is at its source coordinates)
    x-original-size    with x-truncated: the original value's size in bytes
A replayed record loses those and gains `x-replayed-from: <topic>:<partition>:<offset>`; a
record dead-lettered again keeps that trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.pipeline.records import Record

# The values of x-error-type.
ERROR_TYPE_VALIDATION = "validation"
ERROR_TYPE_UNPROCESSABLE = "unprocessable"
"""A record whose preparation raised something no check foresaw."""
ERROR_TYPE_PERSIST_FAILED = "persist_failed"
ERROR_TYPE_PERSIST_REFUSED = "persist_refused"
ERROR_TYPES = (
    ERROR_TYPE_VALIDATION,
    ERROR_TYPE_UNPROCESSABLE,
    ERROR_TYPE_PERSIST_FAILED,
    ERROR_TYPE_PERSIST_REFUSED,
)
UNKNOWN_ERROR_TYPE = "unknown"
"""The error type of a record without `x-error-type` (`dlq replay --error-type unknown` chooses those)."""

HEADER_ERROR_TYPE = "x-error-type"
HEADER_ERROR_REASON = "x-error-reason"
HEADER_ERROR_MESSAGE = "x-error-message"
HEADER_ERROR_CLASS = "x-error-class"
HEADER_TRACE_ID = "x-trace-id"
HEADER_SOURCE_TOPIC = "x-source-topic"
HEADER_SOURCE_PARTITION = "x-source-partition"
HEADER_SOURCE_OFFSET = "x-source-offset"
HEADER_FAILED_AT = "x-failed-at"
HEADER_TRUNCATED = "x-truncated"
HEADER_ORIGINAL_SIZE = "x-original-size"
HEADER_REPLAYED_FROM = "x-replayed-from"
ERROR_HEADER_PREFIX = "x-error-"
SOURCE_HEADER_PREFIX = "x-source-"
OUR_HEADER_PREFIXES = (
    ERROR_HEADER_PREFIX,
    SOURCE_HEADER_PREFIX,
    HEADER_FAILED_AT,
    HEADER_TRUNCATED,
    HEADER_ORIGINAL_SIZE,
    HEADER_TRACE_ID,
)
"""Every header a dead letter gets starts with one of these; a record's own headers are those that do not."""

Headers = list[tuple[str, bytes]]


def header(record: Record, name: str) -> str | None:
    """The first header called `name`, decoded (None when absent)."""
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


def error_type(record: Record) -> str:
    """The dead letter's x-error-type (UNKNOWN_ERROR_TYPE without one)."""
    return header(record, HEADER_ERROR_TYPE) or UNKNOWN_ERROR_TYPE


def original_headers(headers: Iterable[tuple[str, bytes]]) -> Headers:
    """The headers the record's producer gave it: those a dead letter gets left out."""
    return [(key, bytes(value)) for key, value in headers if not key.startswith(OUR_HEADER_PREFIXES)]


def replay_headers(record: Record) -> Headers:
    """The record's own headers, plus where it was replayed from (one x-replayed-from: the latest)."""
    kept = [(key, value) for key, value in original_headers(record.headers) if key != HEADER_REPLAYED_FROM]
    origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
    return [*kept, (HEADER_REPLAYED_FROM, origin)]
