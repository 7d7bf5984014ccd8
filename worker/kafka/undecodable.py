"""Polling that survives a record batch the client cannot decode (corrupt, or an unknown codec).

aiokafka decodes fetched batches while `getmany` hands records out; a batch that fails
(CorruptRecordException, UnsupportedCodecError, a decompressor's own error) raises out of
`getmany`, every record drained in that call is dropped, and the next fetch meets the same
batch again: without this module the worker exits, restarts, and exits again.

`poll` puts every partition back where the call found it, then reads each one record at a
time to find the batch: the records before it are handed out as usual, and its partition is
paused at the first offset that cannot be decoded, with a `partition_undecodable` log line
and `persistence_undecodable_batches_total`. Nothing is skipped or committed past it: the
partition stays paused until the consumer is restarted or reassigned (an operator's call:
install the codec, or move the group's offset past the batch with Kafka's tools).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    ConsumerStoppedError,
    CorruptRecordException,
    KafkaError,
    UnsupportedCodecError,
)
from aiokafka.structs import TopicPartition
from prometheus_client import Counter

log = structlog.get_logger(__name__)

PROBE_MIN_WAIT_MS = 1000  # above a fetch's long poll (fetch_max_wait_ms, 500 ms by default)
PROBE_WAITS = 5
UNDECODABLE_BATCHES = Counter(
    "persistence_undecodable_batches_total",
    "Record batches the consumer could not decode; their partition is paused",
    ["topic"],
)
Fetched = dict[TopicPartition, list[Any]]
"""Records per partition, as `getmany` returns them (aiokafka's ConsumerRecord, untyped)."""


def is_decode_error(exc: BaseException) -> bool:
    """Raised while unpacking fetched records rather than by the broker or the consumer's state."""
    if isinstance(exc, CorruptRecordException | UnsupportedCodecError):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, KafkaError | ConsumerStoppedError)


async def poll(
    consumer: AIOKafkaConsumer,
    *,
    timeout_ms: int,
    max_records: int,
    offset_reset: Literal["earliest", "latest"] = "earliest",
) -> Fetched:
    """`consumer.getmany`, except that an undecodable batch pauses its partition instead of raising.

    `offset_reset` is the consumer's auto_offset_reset: where a partition assigned during the
    failed call, with no committed offset, is put back.
    """
    before = await _positions(consumer, timeout_ms)
    try:
        return await consumer.getmany(  # type: ignore[no-any-return]
            timeout_ms=timeout_ms, max_records=max_records
        )
    except Exception as exc:
        if not is_decode_error(exc):
            raise
        error = exc
    before = await _seek_back(consumer, before, offset_reset)
    batch, found = await _isolate(consumer, before, timeout_ms=timeout_ms, max_records=max_records)
    if not found:
        raise error  # no partition fails on its own: not a decoding problem after all
    return batch


async def _positions(consumer: AIOKafkaConsumer, timeout_ms: int) -> dict[TopicPartition, int]:
    """Where each assigned partition stands; one still being reset (no position within the poll's
    timeout, e.g. the group coordinator is away) is left out and handled as newly assigned."""
    lookups = {tp: asyncio.ensure_future(consumer.position(tp)) for tp in consumer.assignment()}
    if not lookups:
        return {}
    await asyncio.wait(lookups.values(), timeout=timeout_ms / 1000)
    positions = {}
    for tp, lookup in lookups.items():
        if not lookup.done():
            lookup.cancel()
        elif lookup.exception() is None:  # IllegalStateError: revoked meanwhile
            positions[tp] = lookup.result()
    return positions


async def _seek_back(
    consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int], offset_reset: str
) -> dict[TopicPartition, int]:
    """Undo what the failed call consumed (the records it drained were never handed out).

    A partition assigned during the call starts again where a new assignment starts: its
    committed offset, else the reset policy. Returns the positions of every unpaused partition.
    """
    restored = {}
    for tp in consumer.assignment() - consumer.paused():
        offset = positions.get(tp)
        if offset is None:
            offset = await consumer.committed(tp)
        if offset is not None:
            consumer.seek(tp, offset)
        elif offset_reset == "earliest":
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)
        restored[tp] = await consumer.position(tp)
    return restored


async def _isolate(
    consumer: AIOKafkaConsumer, before: Mapping[TopicPartition, int], *, timeout_ms: int, max_records: int
) -> tuple[Fetched, bool]:
    """Each partition read alone, one record at a time; the decodable records, and whether one failed."""
    batch: Fetched = {}
    found = False
    for tp in before:
        records, failed = await _read_alone(consumer, tp, timeout_ms=timeout_ms, limit=max_records)
        max_records -= len(records)
        if records:
            batch[tp] = records
        if failed is not None:
            found = True
            await _pause_at_failure(consumer, tp, failed)
        if max_records <= 0:
            break
    return batch, found


async def _read_alone(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, timeout_ms: int, limit: int
) -> tuple[list[Any], Exception | None]:
    """Up to `limit` records of `tp` until its end; stops at the first that fails to decode."""
    records: list[Any] = []
    waits = 0
    while len(records) < limit and waits < PROBE_WAITS:
        try:
            got = await consumer.getmany(tp, timeout_ms=max(timeout_ms, PROBE_MIN_WAIT_MS), max_records=1)
        except Exception as exc:
            if not is_decode_error(exc):
                raise
            return records, exc
        if got:
            records += got.get(tp, [])
        elif await consumer.position(tp) >= (consumer.highwater(tp) or 0):
            break  # read to the end as last fetched
        else:
            waits += 1  # a fetch for it is still in flight
    return records, None


async def _pause_at_failure(consumer: AIOKafkaConsumer, tp: TopicPartition, error: Exception) -> None:
    offset = await consumer.position(tp)  # the failed call moved nothing: the undecodable batch's start
    consumer.seek(tp, offset)  # drops the half-read fetch
    consumer.pause(tp)
    UNDECODABLE_BATCHES.labels(topic=tp.topic).inc()
    log.error(
        "partition_undecodable",
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        error=f"{type(error).__name__}: {error}",
        action="paused until restart or reassignment",
    )
