"""Polling that survives a record batch the client cannot decode (corrupt, or an unknown codec).

aiokafka decodes fetched batches while `getmany` hands records out; a batch that fails
(CorruptRecordException, UnsupportedCodecError, a decompressor's own error) raises out of
`getmany`, every record drained in that call is dropped, and the next fetch meets the same
batch again: without this module the worker exits, restarts, and exits again.

`poll` puts every partition back where the call found it, then reads each one alone, record
by record, until one fails: each as far as the failed call could have drained (`max_records`),
so the failing record is found whatever the order of the partitions and however long a healthy
partition's backlog. That partition's records before the batch are handed out first, then the
others' up to `max_records`; what does not fit is put back for the next poll. It is paused at the
first offset that cannot be decoded, with a `partition_undecodable` log line and
`persistence_undecodable_batches_total`. Nothing is skipped or committed past it: the
partition stays paused until the consumer is restarted or reassigned (an operator's call:
install the codec, or move the group's offset past the batch with Kafka's tools). A partition
revoked meanwhile (IllegalStateError) is left out: its records are another member's now.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    ConsumerStoppedError,
    CorruptRecordException,
    IllegalStateError,
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
    partitions = await _seek_back(consumer, before, offset_reset)
    reads = await _read_each_alone(consumer, partitions, timeout_ms=timeout_ms, horizon=max_records)
    if all(read.complete and read.failure is None for read in reads.values()):
        raise error  # every partition reads fine on its own: not a decoding problem after all
    return await _hand_out(consumer, reads, budget=max_records)


@dataclass
class _Read:
    """One partition read alone: its decodable records, and the error of the first that is not."""

    records: list[Any] = field(default_factory=list)
    failure: Exception | None = None
    complete: bool = True
    """Read to a failure, its end or the horizon; not when revoked or its fetch never came."""


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
) -> list[TopicPartition]:
    """Undo what the failed call consumed (the records it drained were never handed out).

    Returns every unpaused partition; one revoked meanwhile is among them, and its read says so.
    """
    partitions = list(consumer.assignment() - consumer.paused())
    for tp in partitions:
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile: another member's now
            await _restore(consumer, tp, positions.get(tp), offset_reset)
    return partitions


async def _restore(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int | None, offset_reset: str
) -> None:
    """Seek `tp` to `offset`; one assigned during the failed call (no offset) starts again where a
    new assignment starts: its committed offset, else the reset policy."""
    if offset is None:
        offset = await consumer.committed(tp)
    if offset is not None:
        consumer.seek(tp, offset)
    elif offset_reset == "earliest":
        await consumer.seek_to_beginning(tp)
    else:
        await consumer.seek_to_end(tp)


async def _read_each_alone(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *, timeout_ms: int, horizon: int
) -> dict[TopicPartition, _Read]:
    """The partitions read alone in turn until one fails; each up to `horizon` records, as many as
    the failed call could drain, so the record that failed it is within reach whatever came first."""
    reads: dict[TopicPartition, _Read] = {}
    for tp in partitions:
        reads[tp] = await _read_unless_revoked(consumer, tp, timeout_ms=timeout_ms, limit=horizon)
        if reads[tp].failure is not None:
            break
    return reads


async def _read_unless_revoked(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, timeout_ms: int, limit: int
) -> _Read:
    if tp not in consumer.assignment():
        return _Read(complete=False)
    try:
        return await _read_alone(consumer, tp, timeout_ms=timeout_ms, limit=limit)
    except IllegalStateError:  # revoked while read: what it read is another member's now
        return _Read(complete=False)


async def _read_alone(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, timeout_ms: int, limit: int
) -> _Read:
    """Up to `limit` records of `tp` until its end; stops at the first that fails to decode."""
    read = _Read()
    waits = 0
    while len(read.records) < limit and waits < PROBE_WAITS:
        try:
            got = await consumer.getmany(tp, timeout_ms=max(timeout_ms, PROBE_MIN_WAIT_MS), max_records=1)
        except Exception as exc:
            if not is_decode_error(exc):
                raise
            read.failure = exc
            return read
        if got:
            read.records += got.get(tp, [])
        elif await consumer.position(tp) >= (consumer.highwater(tp) or 0):
            break  # read to the end as last fetched
        else:
            waits += 1  # a fetch for it is still in flight
    read.complete = waits < PROBE_WAITS
    return read


async def _hand_out(
    consumer: AIOKafkaConsumer, reads: Mapping[TopicPartition, _Read], *, budget: int
) -> Fetched:
    """Up to `budget` records, a failed partition's first: its records before the bad batch are fewer
    than the horizon, so they fit and it is paused at once. What does not fit is put back."""
    batch: Fetched = {}
    for tp in sorted(reads, key=lambda tp: reads[tp].failure is None):
        kept = reads[tp].records[:budget]
        try:
            await _settle(consumer, tp, reads[tp], handed_out=len(kept))
        except IllegalStateError:  # revoked meanwhile: another member's now
            continue
        budget -= len(kept)
        if kept:
            batch[tp] = kept
    return batch


async def _settle(consumer: AIOKafkaConsumer, tp: TopicPartition, read: _Read, *, handed_out: int) -> None:
    """`tp` at its first record not handed out, read by the next poll; or paused at its failure."""
    if handed_out < len(read.records):
        consumer.seek(tp, read.records[handed_out].offset)
    elif read.failure is not None:
        await _pause_at_failure(consumer, tp, read.failure)


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
