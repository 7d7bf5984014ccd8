"""Buffered telemetry as Kafka messages, sent with acks=all; each send's outcome as an Attempt.

The message: key = `correlation.workflow_id` (one workflow's telemetry stays in order on one
partition); value = the telemetry event as JSON: `correlation`, `metrics`, `timestamp`
(ISO-8601 UTC, `Z`), `source`; headers `retry_count` (this attempt's number) and
`buffer_id` (the buffer document's `_id`, the event's identity: consumers de-duplicate on it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from worker.errors import DocumentRefused, WorkerError
from worker.kafka.clients import ProducerPurpose, create_producer
from worker.kafka.errors import convert, converted
from worker.settings import Settings
from worker.telemetry.buffer import Attempt

Pending = tuple[dict[str, Any], "asyncio.Future[Any] | Attempt"]


class MalformedDocument(ValueError):
    """A buffer document that cannot become a telemetry message (a field missing or mistyped)."""


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _iso_utc(value: Any) -> str:
    if isinstance(value, str):  # stored as text by some servers; pass it on as it is
        return value
    if not isinstance(value, datetime):
        raise MalformedDocument(f"timestamp is {type(value).__name__}, not a date")
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def telemetry_message(document: Mapping[str, Any]) -> Message:
    """The message for one buffer document; MalformedDocument if it lacks what the event needs."""
    try:
        correlation = document["correlation"]
        event = {
            "correlation": correlation,
            "metrics": document["metrics"],
            "timestamp": _iso_utc(document["timestamp"]),
            "source": document["source"],
        }
        key = str(correlation["workflow_id"]).encode()
        value = orjson.dumps(event)
    except (KeyError, TypeError, orjson.JSONEncodeError) as exc:
        raise MalformedDocument(f"malformed buffer document: {type(exc).__name__}: {exc}") from exc
    headers = [
        ("retry_count", str(document.get("retry_count", 0)).encode()),
        ("buffer_id", str(document["_id"]).encode()),
    ]
    return Message(key=key, value=value, headers=headers)


def create_delivery_producer(settings: Settings) -> AIOKafkaProducer:
    """The factory's telemetry producer: acks=all, every send resolved well within the lease."""
    return create_producer(settings, purpose=ProducerPurpose.TELEMETRY)


class TelemetryPublisher:
    """Sends buffer documents to one topic and reports an Attempt per document."""

    def __init__(self, *, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, document: dict[str, Any]) -> Pending:
        """Queue one document; the future resolves when the broker acknowledges it."""
        try:
            message = telemetry_message(document)
            future = await converted(
                self._producer.send(self.topic, value=message.value, key=message.key, headers=message.headers)
            )
        except MalformedDocument as exc:
            return document, Attempt(document, error=str(exc), permanent=True)
        except WorkerError as exc:
            return document, _failed(document, exc)
        return document, future

    async def outcomes(self, pending: Sequence[Pending], *, within_s: float) -> list[Attempt]:
        """Wait for every acknowledgement (at most `within_s`); one Attempt per document."""
        futures = [item for _, item in pending if isinstance(item, asyncio.Future)]
        if futures:
            await asyncio.wait(futures, timeout=within_s)
        return [_outcome(document, item) for document, item in pending]


def _outcome(document: dict[str, Any], item: asyncio.Future[Any] | Attempt) -> Attempt:
    if isinstance(item, Attempt):
        return item
    if not item.done():
        item.cancel()  # only our interest in it: the producer may still deliver the record
        return Attempt(document, error="no acknowledgement from Kafka in time", unknown=True)
    exc = item.exception()
    return Attempt(document) if exc is None else _failed(document, convert(exc))


def _failed(document: dict[str, Any], error: WorkerError) -> Attempt:
    """A send the broker (or producer) refused: for good if the record itself is refused (its size)."""
    return Attempt(document, error=str(error), permanent=isinstance(error, DocumentRefused))
