"""Publishing through a second Kafka client library: librdkafka (confluent-kafka), as producers
in other languages do. Its calls block, so tests run them with `asyncio.to_thread`."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

TIMEOUT_S = 30


def _producer(bootstrap: str, **options: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, **options})


def _flush(producer: Producer, failures: list[str]) -> None:
    assert producer.flush(TIMEOUT_S) == 0, "librdkafka could not deliver every record in time"
    assert not failures, failures


def publish(bootstrap: str, topic: str, values: list[bytes], *, codec: str = "none") -> None:
    """Publish `values` compressed with `codec` (none, gzip, snappy, lz4, zstd); acks=all."""
    producer = _producer(bootstrap, **{"compression.type": codec, "enable.idempotence": False})
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for value in values:
        producer.produce(topic, value=value, on_delivery=delivered)
    _flush(producer, failures)


def publish_in_transaction(
    bootstrap: str, topic: str, values: list[bytes], *, commit: bool, tx_id: str
) -> None:
    """Send `values` in one transaction, then commit or abort it."""
    producer = _producer(bootstrap, **{"transactional.id": tx_id})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value)
    # Written to the log first: an abort would otherwise drop records still queued in the client.
    assert producer.flush(TIMEOUT_S) == 0, "librdkafka could not write the transaction's records in time"
    if commit:
        producer.commit_transaction(TIMEOUT_S)
    else:
        producer.abort_transaction(TIMEOUT_S)
