"""Specification of worker.dead_letters.letters and .publisher: what a dead letter carries and how it is published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, UnknownError
from aiokafka.structs import TopicPartition

from tests.support.kafka import FakeProducer, FakeRecord
from worker.dead_letters.letters import MAX_MESSAGE_CHARS, DeadLetter
from worker.dead_letters.publisher import DeadLetterPublisher
from worker.errors import TransientError


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


def big_letter(offset: int, size: int, headers: tuple[tuple[str, bytes], ...] = ()) -> DeadLetter:
    record = FakeRecord("orchestrator.telemetry", 2, offset, b"x" * size, b"wf-1", headers)
    return DeadLetter(record, "orchestrator.telemetry.dlq", "validation", "too_large", "over MAX_EVENT_BYTES")


async def test_a_dead_letter_over_max_request_size_is_sent_truncated_and_flagged() -> None:
    """A dead letter the producer could not send whole goes truncated, with x-truncated and x-original-size."""
    producer = FakeProducer()
    publisher = DeadLetterPublisher(producer=producer, truncated_value_bytes=1000)
    await publisher.publish([big_letter(5, 1_500_000, (("event_id", b"tel-5"),)), letter()])
    [(topic, big), (_, small)] = producer.acknowledged
    headers = dict(big["headers"])
    assert (topic, big["key"], big["value"]) == ("orchestrator.telemetry.dlq", b"wf-1", b"x" * 1000)
    assert (headers["x-truncated"], headers["x-original-size"]) == (b"true", b"1500000")
    assert (headers["x-source-offset"], headers["x-error-reason"], headers["event_id"]) == (
        b"5",
        b"too_large",
        b"tel-5",
    )
    assert "x-truncated" not in dict(small["headers"])


async def test_the_size_limit_is_the_configured_max_request_size() -> None:
    """A letter under aiokafka's default but over the configured max_request_bytes is truncated before sending."""
    producer = FakeProducer(max_request_size=100_000)
    publisher = DeadLetterPublisher(producer=producer, max_request_bytes=100_000, truncated_value_bytes=10)
    await publisher.publish([big_letter(0, 200_000)])
    assert [len(kwargs["value"]) for _, kwargs in producer.sent] == [10]


async def test_a_dead_letter_the_broker_refuses_for_its_size_is_sent_again_truncated() -> None:
    """A dead letter the broker refuses as too large (under max_request_size) is published again truncated."""
    producer = FakeProducer(broker_max_bytes=5000)
    publisher = DeadLetterPublisher(producer=producer, truncated_value_bytes=4000)
    await publisher.publish([big_letter(9, 600_000)])
    assert [len(kwargs["value"]) for _, kwargs in producer.sent] == [600_000, 4000]
    assert [dict(kwargs["headers"]).get("x-truncated") for _, kwargs in producer.acknowledged] == [b"true"]


async def test_an_invalid_record_refusal_ends_with_a_coordinates_only_dead_letter() -> None:
    """If the broker refuses even the truncated letter (INVALID_RECORD), one without a value is sent."""
    invalid = UnknownError("INVALID_RECORD")
    invalid.errno = 87  # aiokafka has no class for the broker's INVALID_RECORD
    producer = FakeProducer(broker_max_bytes=0, broker_refusal=invalid)
    publisher = DeadLetterPublisher(producer=producer, truncated_value_bytes=4000)
    await publisher.publish([big_letter(9, 10)])
    assert [len(kwargs["value"]) for _, kwargs in producer.sent] == [10, 10, 0]
    assert dict(producer.acknowledged[0][1]["headers"])["x-original-size"] == b"10"


async def test_acknowledged_dead_letters_are_not_published_again_when_the_batch_is_retried() -> None:
    """After a partial failure, the retry sends only the dead letters the broker did not acknowledge."""
    producer = FakeProducer(fail_offsets=frozenset({2}))
    publisher = DeadLetterPublisher(producer=producer)
    letters = [big_letter(offset, 10) for offset in range(4)]
    with pytest.raises(TransientError):
        await publisher.publish(letters)
    await publisher.publish(letters)
    offsets = [dict(kwargs["headers"])["x-source-offset"] for _, kwargs in producer.acknowledged]
    assert sorted(offsets) == [b"0", b"1", b"2", b"3"]


async def test_committed_or_revoked_partitions_are_forgotten() -> None:
    """Once committed past (settled) or revoked (forget), a record's dead letter is published again if asked."""
    producer = FakeProducer()
    publisher = DeadLetterPublisher(producer=producer)
    letters = [big_letter(offset, 10) for offset in range(3)]
    await publisher.publish(letters)
    publisher.settled({TopicPartition("orchestrator.telemetry", 2): 2})
    await publisher.publish(letters)
    assert [dict(kw["headers"])["x-source-offset"] for _, kw in producer.sent] == [
        b"0",
        b"1",
        b"2",
        b"0",
        b"1",
    ]
    publisher.forget([TopicPartition("orchestrator.telemetry", 2)])
    await publisher.publish(letters[2:])
    assert len(producer.sent) == 6


def test_the_error_message_header_never_carries_uri_credentials() -> None:
    """x-error-message is scrubbed: a driver message quoting `user:password@host` keeps no password."""
    headers = dict(letter(message="cannot write to mongodb://audit:Quokka-secret-7@db1:27017/x").headers())
    assert b"Quokka-secret-7" not in headers["x-error-message"]
    assert b"db1:27017" in headers["x-error-message"]
