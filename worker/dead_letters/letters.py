"""A dead letter: the original key, value and headers, plus headers naming the error.

The headers are named in worker.dead_letters.headers. Earlier `x-error-*` / `x-source-*`
headers are replaced, so a record dead-lettered twice describes its latest failure. A dead
letter too large to send is `truncated`: its value cut, flagged with x-truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from worker.dead_letters.headers import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_REASON,
    HEADER_ERROR_TYPE,
    HEADER_FAILED_AT,
    HEADER_ORIGINAL_SIZE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TRACE_ID,
    HEADER_TRUNCATED,
    Headers,
    original_headers,
)
from worker.kafka.producer import record_size
from worker.ops.redaction import scrub
from worker.ops.trace import trace_id
from worker.pipeline.records import Record

MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record for a dead-letter topic, as the producer sends it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    def size(self) -> int:
        """The size aiokafka compares with max_request_size."""
        return record_size(self.key, self.value, self.headers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record for its dead-letter topic, and why it is there."""

    record: Record
    dlq_topic: str
    error_type: str
    reason: str
    message: str

    def headers(self) -> Headers:
        return original_headers(self.record.headers) + self._our_headers()

    def outgoing(self) -> Outgoing:
        """The dead letter whole: the original key, value and headers, plus ours."""
        return Outgoing(self.dlq_topic, self.record.key, self.record.value, self.headers())

    def truncated(self, keep: int) -> Outgoing:
        """At most `keep` bytes of the value (and key), flagged; original headers if they fit in `keep`."""
        value, key = self.record.value or b"", self.record.key
        originals = original_headers(self.record.headers)
        if sum(len(name) + len(data) for name, data in originals) > keep:
            originals = []
        marks = [(HEADER_TRUNCATED, b"true"), (HEADER_ORIGINAL_SIZE, str(len(value)).encode())]
        short_key = key[:keep] if key is not None else None
        return Outgoing(self.dlq_topic, short_key, value[:keep], originals + self._our_headers() + marks)

    def _our_headers(self) -> Headers:
        ours = {
            HEADER_ERROR_TYPE: self.error_type,
            HEADER_ERROR_REASON: self.reason,
            HEADER_ERROR_MESSAGE: scrub(self.message)[:MAX_MESSAGE_CHARS],
            HEADER_SOURCE_TOPIC: self.record.topic,
            HEADER_SOURCE_PARTITION: str(self.record.partition),
            HEADER_SOURCE_OFFSET: str(self.record.offset),
            HEADER_FAILED_AT: datetime.now(UTC).isoformat(),
        }
        if (trace := trace_id(self.record.headers)) is not None:
            ours[HEADER_TRACE_ID] = trace
        return [(key, value.encode()) for key, value in ours.items()]


@dataclass(frozen=True, slots=True)
class UnprocessableLetter(DeadLetter):
    """A dead letter whose preparation raised unexpectedly: `x-error-class` names the exception."""

    error_class: str = ""

    def headers(self) -> Headers:
        return [*DeadLetter.headers(self), (HEADER_ERROR_CLASS, self.error_class.encode())]


def error_class(error: BaseException) -> str:
    """The `x-error-class` of an unexpected exception: its module and qualified name."""
    return f"{type(error).__module__}.{type(error).__qualname__}"
