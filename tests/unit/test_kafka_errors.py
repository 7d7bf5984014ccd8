"""worker.kafka.errors, worker.kafka.producer and worker.kafka.consumer: aiokafka's errors leave kafka/ as ours."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    UnknownError,
)
from aiokafka.structs import TopicPartition

from tests.support.kafka import FakeConsumer, FakeProducer
from worker.errors import DocumentRefused, TransientError
from worker.kafka.consumer import GroupConsumer
from worker.kafka.diagnose import kafka_failure
from worker.kafka.errors import convert, converted, refused_as_such
from worker.kafka.producer import acknowledged, enqueue
from worker.settings import Settings


def test_a_record_refused_for_its_size_or_form_is_a_refused_document() -> None:
    """Too large (either class) and the broker's INVALID_RECORD become DocumentRefused."""
    invalid = UnknownError("INVALID_RECORD")
    invalid.errno = 87
    for error in (MessageSizeTooLargeError(), RecordTooLargeError(), invalid):
        assert refused_as_such(error)
        assert isinstance(convert(error), DocumentRefused)


def test_any_other_kafka_or_socket_error_is_transient_and_named() -> None:
    """A connection error, a refused commit or a socket error is TransientError, its text led by the class name."""
    for error in (KafkaConnectionError("down"), CommitFailedError("rebalanced"), ConnectionResetError("reset")):
        converted_error = convert(error)
        assert type(converted_error) is TransientError
        assert str(converted_error).startswith(f"{type(error).__name__}: ")


def test_one_of_ours_is_left_as_it_is() -> None:
    """Converting an error that is already ours returns it unchanged."""
    ours = TransientError("already ours")
    assert convert(ours) is ours


async def test_converted_raises_ours_from_the_original() -> None:
    """An awaited aiokafka error leaves `converted` as ours, with the original as its cause."""
    original = KafkaConnectionError("Unable to bootstrap from [('localhost', 1, 0)]")

    async def fail() -> None:
        raise original

    with pytest.raises(TransientError) as caught:
        await converted(fail())
    assert caught.value.__cause__ is original


async def test_a_bug_is_not_converted() -> None:
    """An exception that is not Kafka's nor the network's passes through `converted` as it is."""

    async def fail() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await converted(fail())


def test_the_operator_is_told_the_cause_of_a_converted_error() -> None:
    """kafka_failure reads a converted error's cause: a refused SASL login stays "authentication failed"."""
    original = SaslAuthenticationFailed("bad password")
    ours = convert(original)
    ours.__cause__ = original
    failure = kafka_failure(ours, Settings())
    assert failure.refused
    assert failure.reason == "authentication failed"


async def test_enqueue_and_acknowledged_raise_our_types() -> None:
    """A send refused as too large is DocumentRefused; a delivery that fails for the network is TransientError."""
    with pytest.raises(DocumentRefused):
        await enqueue(FakeProducer(send_error=MessageSizeTooLargeError()), "t", key=None, value=b"v", headers=[])  # type: ignore[arg-type]
    delivery = await enqueue(
        FakeProducer(delivery_error=KafkaConnectionError("down")),  # type: ignore[arg-type]
        "t", key=b"k", value=b"v", headers=[("h", b"1")],
    )  # fmt: skip
    with pytest.raises(TransientError):
        await acknowledged(delivery)


async def test_the_group_consumer_raises_only_our_types() -> None:
    """A refused commit and a failed position look-up (the partition revoked) leave GroupConsumer as TransientError."""
    consumer = GroupConsumer(FakeConsumer(commit_error=CommitFailedError("rebalanced")))  # type: ignore[arg-type]
    tp = TopicPartition("t", 0)
    with pytest.raises(TransientError, match="CommitFailedError"):
        await consumer.commit({tp: 1})
    with pytest.raises(TransientError, match="IllegalStateError"):
        await consumer.position(tp)
