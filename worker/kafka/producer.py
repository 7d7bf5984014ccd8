"""Sending through an aiokafka producer, with its errors converted (see worker.kafka.errors).

`enqueue` hands one record to the producer and returns its delivery; `acknowledged` waits for
the broker to acknowledge it. Either raises DocumentRefused for a record refused for its size
or form, TransientError for anything else the cluster or the network did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.kafka.errors import converted

Producer = AIOKafkaProducer
"""The producer type the factory (`worker.kafka.clients.create_producer`) builds."""
Headers = Sequence[tuple[str, bytes]]
Delivery = asyncio.Future[object]


async def enqueue(
    producer: AIOKafkaProducer, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers
) -> Delivery:
    """Hand one record to the producer; the delivery resolves when the broker acknowledges it."""
    delivery: Delivery = await converted(producer.send(topic, value=value, key=key, headers=list(headers)))
    return delivery


async def acknowledged(delivery: Delivery) -> None:
    """Wait until the broker acknowledges the record of `delivery`."""
    await converted(delivery)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The size aiokafka compares with max_request_size."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))
