"""Dead-letter publishing: the original key, value and headers, plus headers naming the error.

Dead-letter headers (all UTF-8):
    x-error-type       validation | unprocessable | persist_failed | persist_refused
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
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from worker.errors import TransientError
from worker.ops.redaction import scrub
from worker.ops.trace import trace_id
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.pipeline.batch import Record

ERROR_TYPE_VALIDATION = "validation"
ERROR_TYPE_PERSIST_FAILED = "persist_failed"
ERROR_TYPE_PERSIST_REFUSED = "persist_refused"
_OUR_PREFIXES = ("x-error-", "x-source-", "x-failed-at", "x-truncated", "x-original-size", "x-trace-id")
MAX_MESSAGE_CHARS = 2000
DEFAULT_MAX_REQUEST_BYTES = 1_048_576
"""aiokafka's default max_request_size."""
DEFAULT_TRUNCATED_VALUE_BYTES = 65_536
INVALID_RECORD = 87
"""The broker's INVALID_RECORD error code (aiokafka has no class for it: UnknownError)."""
_REFUSED_AS_SUCH = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)

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
        return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(self.key, self.value, self.headers))


@dataclass(frozen=True, slots=True)
class DeadLetter:
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
        marks = [("x-truncated", b"true"), ("x-original-size", str(len(value)).encode())]
        short_key = key[:keep] if key is not None else None
        return Outgoing(self.dlq_topic, short_key, value[:keep], originals + self._our_headers() + marks)

    def _original_headers(self) -> Headers:
        return [(k, bytes(v)) for k, v in self.record.headers if not k.startswith(_OUR_PREFIXES)]

    def _our_headers(self) -> Headers:
        ours = {
            "x-error-type": self.error_type,
            "x-error-reason": self.reason,
            "x-error-message": scrub(self.message)[:MAX_MESSAGE_CHARS],
            "x-source-topic": self.record.topic,
            "x-source-partition": str(self.record.partition),
            "x-source-offset": str(self.record.offset),
            "x-failed-at": datetime.now(UTC).isoformat(),
        }
        if (trace := trace_id(self.record.headers)) is not None:
            ours["x-trace-id"] = trace
        return [(key, value.encode()) for key, value in ours.items()]


def _refused_as_such(exc: BaseException) -> bool:
    """The broker (or the producer) refuses this record for its size or form, not for now."""
    return isinstance(exc, _REFUSED_AS_SUCH) or getattr(exc, "errno", None) == INVALID_RECORD


def _source(letter: DeadLetter) -> TopicPartition:
    return TopicPartition(letter.record.topic, letter.record.partition)


class DeadLetterPublisher:
    """Sends dead letters and waits until the broker acknowledges every one."""

    def __init__(
        self,
        *,
        producer: AIOKafkaProducer,
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
        source = letter.record
        return source.offset in self._acknowledged.get(TopicPartition(source.topic, source.partition), ())

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
        outcomes = await asyncio.gather(*(delivery for _, delivery in sent), return_exceptions=True)
        for (letter, _), outcome in zip(sent, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                self._acknowledged[_source(letter)].add(letter.record.offset)
            elif _refused_as_such(outcome):
                refused.append(letter)
            elif isinstance(outcome, KafkaError):
                failure = failure or outcome
            else:
                raise outcome
        if failure is not None:
            raise TransientError(
                f"dead-letter publish failed: {type(failure).__name__}: {failure}"
            ) from failure
        return refused

    async def _enqueue(
        self, letters: Sequence[DeadLetter], keep: int | None
    ) -> tuple[list[tuple[DeadLetter, asyncio.Future[object]]], list[DeadLetter], KafkaError | None]:
        """Hand letters to the producer until one cannot be (then the rest wait for a retry)."""
        sent: list[tuple[DeadLetter, asyncio.Future[object]]] = []
        refused: list[DeadLetter] = []
        for letter in letters:
            out = self._outgoing(letter, keep)
            try:
                delivery = await self._producer.send(
                    out.topic, value=out.value, key=out.key, headers=out.headers
                )
            except KafkaError as exc:
                if not _refused_as_such(exc):
                    return sent, refused, exc
                refused.append(letter)
                continue
            sent.append((letter, delivery))
        return sent, refused, None


def dead_letter_publisher(producer: AIOKafkaProducer, settings: Settings) -> DeadLetterPublisher:
    """The publisher for a producer built by `worker.kafka.clients.create_producer` from the same settings."""
    return DeadLetterPublisher(
        producer=producer,
        max_request_bytes=settings.kafka_max_request_bytes,
        truncated_value_bytes=settings.dlq_truncated_value_bytes,
    )
