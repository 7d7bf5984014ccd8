"""Specification of worker.dlq: what a dead letter carries and how it is published."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from worker.dlq import MAX_MESSAGE_CHARS, DeadLetter, DeadLetterPublisher
from worker.errors import TransientError


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def letter(headers: tuple[tuple[str, bytes], ...] = (), message: str = "value is not JSON") -> DeadLetter:
    record = FakeRecord("orchestrator.incidents", 3, 1207, b"{not json", b"wf-1", headers)
    return DeadLetter(record, "orchestrator.incidents.dlq", "validation", "not_json", message)


def test_headers_keep_the_original_ones_and_describe_the_failure() -> None:
    """Original headers come first, then x-error-type/reason/message and x-source-topic/partition/offset."""
    headers = letter((("traceparent", b"00-abc-01"), ("event_id", b"inc-7"))).headers()
    assert headers[:2] == [("traceparent", b"00-abc-01"), ("event_id", b"inc-7")]
    ours = dict(headers[2:])
    assert {k: v for k, v in ours.items() if k != "x-failed-at"} == {
        "x-error-type": b"validation",
        "x-error-reason": b"not_json",
        "x-error-message": b"value is not JSON",
        "x-source-topic": b"orchestrator.incidents",
        "x-source-partition": b"3",
        "x-source-offset": b"1207",
    }


def test_failed_at_is_the_current_utc_time() -> None:
    """x-failed-at is an ISO-8601 UTC timestamp of when the dead letter was built."""
    stamp = datetime.fromisoformat(dict(letter().headers())["x-failed-at"].decode())
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)


def test_stale_error_headers_are_replaced() -> None:
    """A record dead-lettered before carries only its latest failure's x-error-*/x-source-* headers."""
    stale = (
        ("x-error-type", b"persist_failed"),
        ("x-error-reason", b"retries_exhausted"),
        ("x-error-message", b"old"),
        ("x-source-offset", b"1"),
        ("x-failed-at", b"2020-01-01T00:00:00+00:00"),
        ("tenant", b"acme"),
    )
    headers = letter(stale).headers()
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    assert headers[0] == ("tenant", b"acme")
    assert dict(headers)["x-error-type"] == b"validation"
    assert dict(headers)["x-source-offset"] == b"1207"


def test_a_long_message_is_truncated() -> None:
    """x-error-message holds at most MAX_MESSAGE_CHARS characters of the detail."""
    headers = dict(letter(message="e" * (MAX_MESSAGE_CHARS + 500)).headers())
    assert headers["x-error-message"] == b"e" * MAX_MESSAGE_CHARS


def test_header_values_are_utf8() -> None:
    """Non-ASCII details are encoded as UTF-8."""
    assert (
        dict(letter(message="clé « invalide »").headers())["x-error-message"] == "clé « invalide »".encode()
    )


class FakeProducer:
    """Mimics AIOKafkaProducer.send: enqueue (may fail) and return a delivery future (may fail)."""

    def __init__(
        self, *, send_error: Exception | None = None, delivery_error: Exception | None = None
    ) -> None:
        self.send_error = send_error
        self.delivery_error = delivery_error
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[None]:
        if self.send_error:
            raise self.send_error
        self.sent.append((topic, kwargs))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.delivery_error:
            delivery.set_exception(self.delivery_error)
        else:
            delivery.set_result(None)
        return delivery


async def test_publish_sends_the_original_key_and_value_to_the_dlq_topic() -> None:
    """Each dead letter goes to its dlq_topic with the record's key, value and the failure headers."""
    producer = FakeProducer()
    letters = [letter(), letter((("event_id", b"inc-7"),))]
    await DeadLetterPublisher(producer=producer).publish(letters)
    assert [(topic, kw["key"], kw["value"]) for topic, kw in producer.sent] == [
        ("orchestrator.incidents.dlq", b"wf-1", b"{not json"),
        ("orchestrator.incidents.dlq", b"wf-1", b"{not json"),
    ]
    assert producer.sent[1][1]["headers"][0] == ("event_id", b"inc-7")


async def test_publishing_nothing_sends_nothing() -> None:
    """An empty list of dead letters does not touch the producer."""
    producer = FakeProducer(send_error=AssertionError("must not be called"))
    await DeadLetterPublisher(producer=producer).publish([])


@pytest.mark.parametrize(
    "producer",
    [
        FakeProducer(send_error=KafkaTimeoutError()),
        FakeProducer(delivery_error=KafkaConnectionError("broker down")),
    ],
    ids=["enqueue", "delivery"],
)
async def test_kafka_errors_become_transient(producer: FakeProducer) -> None:
    """A Kafka error while enqueueing or awaiting delivery raises TransientError, chained to it."""
    with pytest.raises(TransientError, match="dead-letter publish failed") as caught:
        await DeadLetterPublisher(producer=producer).publish([letter()])
    assert caught.value.__cause__ is not None
