"""Dead-letter publishing: the original key, value and headers, plus headers naming the error.

Dead-letter headers (all UTF-8):
    x-error-type       validation | persist_failed | persist_refused
    x-error-reason     a stable code (not_json, schema_violation, ...)
    x-error-message    the human-readable detail
    x-source-topic, x-source-partition, x-source-offset
    x-failed-at        ISO-8601 UTC
Earlier `x-error-*` / `x-source-*` headers are replaced, so a record dead-lettered twice
describes its latest failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from worker.errors import TransientError

if TYPE_CHECKING:
    from worker.batch import Record

ERROR_TYPE_VALIDATION = "validation"
ERROR_TYPE_PERSIST_FAILED = "persist_failed"
ERROR_TYPE_PERSIST_REFUSED = "persist_refused"
_OUR_PREFIXES = ("x-error-", "x-source-", "x-failed-at")
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    dlq_topic: str
    error_type: str
    reason: str
    message: str

    def headers(self) -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in self.record.headers if not k.startswith(_OUR_PREFIXES)]
        ours = {
            "x-error-type": self.error_type,
            "x-error-reason": self.reason,
            "x-error-message": self.message[:MAX_MESSAGE_CHARS],
            "x-source-topic": self.record.topic,
            "x-source-partition": str(self.record.partition),
            "x-source-offset": str(self.record.offset),
            "x-failed-at": datetime.now(UTC).isoformat(),
        }
        return kept + [(key, value.encode()) for key, value in ours.items()]


class DeadLetterPublisher:
    """Sends dead letters and waits until the broker acknowledges every one."""

    def __init__(self, *, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        try:
            sends = [
                await self._producer.send(
                    letter.dlq_topic,
                    value=letter.record.value,
                    key=letter.record.key,
                    headers=letter.headers(),
                )
                for letter in letters
            ]
            await asyncio.gather(*sends)
        except KafkaError as exc:
            raise TransientError(f"dead-letter publish failed: {type(exc).__name__}: {exc}") from exc
