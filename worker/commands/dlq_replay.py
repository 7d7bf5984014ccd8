"""`persistence-worker dlq replay`: dead-lettered records back to their source topic, or into MongoDB.

Reads each chosen dead-letter topic from a start position up to the end it had when the
run began (records dead-lettered again meanwhile wait for the next run: nothing loops),
with a consumer from the worker's factory (same fetch bounds; no record held beyond the batch
in hand); a run that stops before those ends exits 1. It keeps the records whose
`x-error-type` was asked for, and either
  - re-publishes each one's original key, value and headers to its source topic (acks=all);
    the worker then stores it, and its idempotent writers store a record replayed twice once; or
  - with --direct, validates and writes it through the worker's own BatchProcessor and
    writers. A record that fails validation again stays in the dead-letter topic and is
    counted as still dead; it is not dead-lettered a second time.
Offsets are committed per batch under the run's own consumer group (by default
`<KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]`), so the next run continues where this
one stopped; `--from-offset` / `--from-time` start elsewhere. A batch that cannot be
delivered (Kafka or MongoDB down) is not committed and ends the run: exit 1, or 3 when a
server refused us. The pieces: dlq_reader (positions and ends), dlq_records (headers),
dlq_targets (re-publish or write), dlq_report (counts and tables).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from worker.app import batch_processor, routes_for
from worker.commands.dlq_reader import DeadLetterReader, StartAt
from worker.commands.dlq_records import error_type
from worker.commands.dlq_report import WORDS, Summary, print_dry_run, print_summary
from worker.commands.dlq_targets import BatchFailed, DirectWriter, KeptDeadLetters, Republisher, Target
from worker.commands.exit_codes import ExitCode
from worker.commands.progress import reporting
from worker.commands.signals import StopOnSignals
from worker.errors import OperationRefused, WorkerError
from worker.kafka.clients import ProducerPurpose, create_consumer, create_producer
from worker.kafka.failures import KafkaRefused, KafkaUnavailable, kafka_errors
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import gateway_for
from worker.mongo.indexes import ensure_indexes, expected_indexes
from worker.ops.messages import report_failure
from worker.pipeline.records import Record
from worker.settings import RouteName, Settings


@dataclass(frozen=True, slots=True)
class DlqReplayOptions:
    routes: tuple[RouteName, ...] = tuple(RouteName)
    error_types: frozenset[str] = frozenset()
    """Empty: every error type."""
    from_offset: int | None = None
    from_time: datetime | None = None
    direct: bool = False
    dry_run: bool = False
    group: str | None = None

    def group_for(self, settings: Settings) -> str:
        if self.group:
            return self.group
        suffix = "-" + "+".join(sorted(self.error_types)) if self.error_types else ""
        return f"{settings.kafka_consumer_group}-dlq-replay{suffix}"


async def dlq_replay_command(settings: Settings, options: DlqReplayOptions) -> int:
    """Exit 0 if every chosen record was replayed, 1 if not, 3 if unreachable, 130 if interrupted."""
    inputs = [settings.topic_for(route) for route in options.routes]
    sources = {settings.dlq_topic(topic): topic for topic in inputs}
    consumer = create_consumer(settings, group_id=options.group_for(settings), auto_offset_reset="earliest")
    closing = AsyncExitStack()
    closing.push_async_callback(consumer.stop)
    try:
        start = StartAt(offset=options.from_offset, time=options.from_time)
        reader = DeadLetterReader(consumer, max_records=settings.kafka_max_batch_records, start=start)
        try:
            with kafka_errors(settings):
                await consumer.start()
                missing = await reader.open(sources)
            target = None if options.dry_run else await _open_target(settings, options, sources, closing)
        except (KafkaUnavailable, KafkaRefused) as exc:
            report_failure(exc.failure)
            return ExitCode.UNREACHABLE
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
        for topic in missing:
            print(f"note: {topic} does not exist; nothing to replay from it", file=sys.stderr)
        return await _replay(consumer, reader, target, options, settings)
    finally:
        await closing.aclose()


async def _open_target(
    settings: Settings, options: DlqReplayOptions, sources: Mapping[str, str], closing: AsyncExitStack
) -> Target:
    if not options.direct:
        producer = create_producer(settings, purpose=ProducerPurpose.REPUBLISH)
        closing.push_async_callback(producer.stop)
        with kafka_errors(settings):
            await producer.start()
        return Republisher(producer, sources, settings)
    gateway = gateway_for(settings)
    closing.push_async_callback(gateway.close)
    database = await gateway.connect()
    await ensure_indexes(database, expected_indexes(settings))
    letters = KeptDeadLetters()
    routes = routes_for(settings, gateway)
    processor = batch_processor(settings, routes, letters)
    return DirectWriter(processor, letters, sources)


async def _replay(
    consumer: AIOKafkaConsumer,
    reader: DeadLetterReader,
    target: Target | None,
    options: DlqReplayOptions,
    settings: Settings,
) -> int:
    summary = Summary()
    stop = asyncio.Event()
    total = await reader.measure()
    with StopOnSignals(stop), reporting("dlq replay", total, silent=options.dry_run, words=WORDS) as reporter:
        async for chunk in reader.batches():
            await _handle(chunk, consumer, target, options, summary, settings)
            reporter.update(summary.tally())
            if summary.error or stop.is_set():
                break
    interrupted = stop.is_set() and not reader.finished()
    if not interrupted and summary.error is None and not reader.finished():
        summary.error = f"stopped before the end offsets it set out to reach: left {reader.shortfall()}"
    if options.dry_run:
        print_dry_run(summary, total)
        return ExitCode.OK if summary.error is None else ExitCode.PROBLEM
    return _finish(summary, options, settings, interrupted=interrupted)


async def _handle(
    chunk: Mapping[TopicPartition, list[Any]],
    consumer: AIOKafkaConsumer,
    target: Target | None,
    options: DlqReplayOptions,
    summary: Summary,
    settings: Settings,
) -> None:
    chosen = [record for records in chunk.values() for record in records if _choose(record, options, summary)]
    if target is None:
        return
    try:
        if chosen:
            replayed, still_dead = await target.replay(chosen)
            summary.replayed += replayed
            summary.still_dead.update(still_dead)
        with kafka_errors(settings):
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in chunk.items()})
    except BatchFailed as exc:
        summary.error = f"{exc} (this batch is not committed: run again once it is fixed)"
        summary.refused = exc.refused
    except (KafkaUnavailable, KafkaRefused) as exc:
        summary.error = f"commit failed: {exc} (the batch may be replayed again)"
        summary.refused = isinstance(exc, OperationRefused)


def _choose(record: Record, options: DlqReplayOptions, summary: Summary) -> bool:
    summary.read += 1
    kind = error_type(record)
    if options.error_types and kind not in options.error_types:
        summary.not_chosen += 1
        return False
    summary.count(record, kind)
    return True


def _finish(summary: Summary, options: DlqReplayOptions, settings: Settings, *, interrupted: bool) -> int:
    mode = "direct to MongoDB" if options.direct else "re-published to the source topics"
    state = "interrupted" if interrupted else "done"
    print_summary(summary, state=state, mode=mode, group=options.group_for(settings))
    if interrupted:
        return ExitCode.INTERRUPTED
    if summary.refused:
        return ExitCode.UNREACHABLE
    return ExitCode.OK if summary.error is None and summary.tally().failed == 0 else ExitCode.PROBLEM
