"""Dead-letter publishing: the original key, value and headers, plus headers naming the error.

Dead-letter headers (all UTF-8):
    x-error-type       validation | unprocessable | persist_failed | persist_refused (ERROR_TYPES)
    x-error-reason     a stable code (not_json, schema_violation, ...)
    x-error-message    the human-readable detail, credentials scrubbed
    x-error-class      with unprocessable: the exception class that preparation raised
    x-trace-id         the W3C trace id, when the record carried a `traceparent` header
    x-source-topic, x-source-partition, x-source-offset
    x-failed-at        ISO-8601 UTC
    x-truncated        "true" when the value is cut (the whole record is at its source coordinates)
    x-original-size    with x-truncated: the original value's size in bytes
Earlier `x-error-*` / `x-source-*` headers are replaced, so a record dead-lettered twice
describes its latest failure.

A dead letter never stalls the flow: one larger than the producer's max_request_size, or
refused as such by the broker (too large, invalid record), is sent again truncated. The
publisher remembers which dead letters the broker acknowledged, by source coordinates, until
their offsets are committed: a batch retried after a failure does not publish them twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.errors import DocumentRefused, TransientError
from worker.kafka.consumer import TopicPartition
from worker.kafka.producer import Delivery, Producer, acknowledged, enqueue, record_size
from worker.ops.redaction import scrub
from worker.ops.trace import trace_id
from worker.pipeline.records import Record, source_of

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

# The headers a dead letter gets (see the module docstring).
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
"""Every header above starts with one of these; a record's own headers are those that do not."""

MAX_MESSAGE_CHARS = 2000
DEFAULT_MAX_REQUEST_BYTES = 1_048_576
"""aiokafka's default max_request_size."""
DEFAULT_TRUNCATED_VALUE_BYTES = 65_536

Headers = list[tuple[str, bytes]]


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
        return self._original_headers() + self._our_headers()

    def outgoing(self) -> Outgoing:
        """The dead letter whole: the original key, value and headers, plus ours."""
        return Outgoing(self.dlq_topic, self.record.key, self.record.value, self.headers())

    def truncated(self, keep: int) -> Outgoing:
        """At most `keep` bytes of the value (and key), flagged; original headers if they fit in `keep`."""
        value, key = self.record.value or b"", self.record.key
        originals = self._original_headers()
        if sum(len(name) + len(data) for name, data in originals) > keep:
            originals = []
        marks = [(HEADER_TRUNCATED, b"true"), (HEADER_ORIGINAL_SIZE, str(len(value)).encode())]
        short_key = key[:keep] if key is not None else None
        return Outgoing(self.dlq_topic, short_key, value[:keep], originals + self._our_headers() + marks)

    def _original_headers(self) -> Headers:
        return [(k, bytes(v)) for k, v in self.record.headers if not k.startswith(OUR_HEADER_PREFIXES)]

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


class DeadLetterPublisher:
    """Sends dead letters and waits until the broker acknowledges every one."""

    def __init__(
        self,
        *,
        producer: Producer,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        truncated_value_bytes: int = DEFAULT_TRUNCATED_VALUE_BYTES,
    ) -> None:
        self._producer = producer
        self._max_request_bytes = max_request_bytes
        self._truncated_value_bytes = truncated_value_bytes
        self._acknowledged: dict[TopicPartition, set[int]] = defaultdict(set)

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Send those not acknowledged yet; raises TransientError if any cannot be sent."""
        pending = [letter for letter in letters if not self._was_acknowledged(letter)]
        # As they are if they fit; then truncated; then with no value (coordinates only).
        for keep in (None, self._truncated_value_bytes, 0):
            if not pending:
                return
            pending = await self._attempt(pending, keep)
        if pending:
            raise TransientError(f"dead-letter publish failed: {len(pending)} refused even without a value")

    def settled(self, commits: Mapping[TopicPartition, int]) -> None:
        """Offsets committed: their dead letters need not be remembered any more."""
        for tp, offset in commits.items():
            self._acknowledged[tp] = {done for done in self._acknowledged.get(tp, ()) if done >= offset}
            if not self._acknowledged[tp]:
                del self._acknowledged[tp]

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their new owner re-reads and re-publishes what was not committed."""
        for tp in partitions:
            self._acknowledged.pop(tp, None)

    def _was_acknowledged(self, letter: DeadLetter) -> bool:
        return letter.record.offset in self._acknowledged.get(source_of(letter.record), ())

    def _outgoing(self, letter: DeadLetter, keep: int | None) -> Outgoing:
        if keep is not None:
            return letter.truncated(keep)
        whole = letter.outgoing()
        if whole.size() <= self._max_request_bytes:
            return whole
        return letter.truncated(self._truncated_value_bytes)

    async def _attempt(self, letters: Sequence[DeadLetter], keep: int | None) -> list[DeadLetter]:
        """Send `letters` (truncated to `keep` if given); return those refused for their size or form."""
        sent, refused, failure = await self._enqueue(letters, keep)
        outcomes = await asyncio.gather(
            *(acknowledged(delivery) for _, delivery in sent), return_exceptions=True
        )
        for (letter, _), outcome in zip(sent, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                self._acknowledged[source_of(letter.record)].add(letter.record.offset)
            elif isinstance(outcome, DocumentRefused):
                refused.append(letter)
            elif isinstance(outcome, TransientError):
                failure = failure or outcome
            else:
                raise outcome
        if failure is not None:
            raise TransientError(f"dead-letter publish failed: {failure}") from failure
        return refused

    async def _enqueue(
        self, letters: Sequence[DeadLetter], keep: int | None
    ) -> tuple[list[tuple[DeadLetter, Delivery]], list[DeadLetter], TransientError | None]:
        """Hand letters to the producer until one cannot be (then the rest wait for a retry)."""
        sent: list[tuple[DeadLetter, Delivery]] = []
        refused: list[DeadLetter] = []
        for letter in letters:
            out = self._outgoing(letter, keep)
            try:
                delivery = await enqueue(
                    self._producer, out.topic, key=out.key, value=out.value, headers=out.headers
                )
            except DocumentRefused:
                refused.append(letter)
                continue
            except TransientError as exc:
                return sent, refused, exc
            sent.append((letter, delivery))
        return sent, refused, None
