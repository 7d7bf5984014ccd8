"""`persistence-worker dlq replay`: runs worker.dead_letters.replay, shows its progress, summary and dry run.

Progress lines and the summary use the same words: `replayed`, `still_dead`, `not_chosen`.
Exit 0 if every chosen record was replayed, 1 if not (a record still dead, a batch that could
not be delivered, a run that stopped before the ends), 3 if a server cannot be reached or
refused us, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from worker.commands.exits import ExitCode
from worker.commands.output import print_tables, reporting, table
from worker.dead_letters.headers import HEADER_ERROR_MESSAGE, HEADER_ERROR_REASON, error_type, header
from worker.dead_letters.publisher import DeadLetterPublisher
from worker.dead_letters.replay import DeadLetterReplay, DlqReplayOptions, Summary
from worker.dead_letters.targets import ProcessorFactory
from worker.errors import WorkerError
from worker.kafka.diagnose import KafkaRefused, KafkaUnavailable
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import MongoGateway
from worker.ops.messages import report_failure
from worker.ops.signals import StopOnSignals
from worker.pipeline.assembly import batch_processor, routes_for
from worker.pipeline.batch import BatchProcessor
from worker.pipeline.records import Record
from worker.settings import RouteName, Settings


def replay(settings: Settings, args: argparse.Namespace) -> int:
    options = DlqReplayOptions(
        routes=tuple(RouteName(r) for r in args.route) if args.route else tuple(RouteName),
        error_types=frozenset(args.error_type or ()), from_offset=args.from_offset,
        from_time=args.from_time, direct=args.direct, dry_run=args.dry_run, group=args.group,
    )  # fmt: skip
    return asyncio.run(dlq_replay_command(settings, options))


async def dlq_replay_command(settings: Settings, options: DlqReplayOptions) -> int:
    """Exit 0 if every chosen record was replayed, 1 if not, 3 if unreachable, 130 if interrupted."""
    run = DeadLetterReplay(settings, options, processor_for(settings))
    try:
        try:
            missing = await run.open()
        except (KafkaUnavailable, KafkaRefused) as exc:
            report_failure(exc.failure)
            return ExitCode.UNREACHABLE
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
        for topic in missing:
            print(f"note: {topic} does not exist; nothing to replay from it", file=sys.stderr)
        total = await run.reader.measure()
        stop = asyncio.Event()
        with (
            StopOnSignals(stop),
            reporting("dlq replay", total, Summary(), silent=options.dry_run) as reporter,
        ):
            summary = await run.run(reporter, stop)
    finally:
        await run.close()
    if options.dry_run:
        print_dry_run(summary, total)
    else:
        print_summary(summary, options, settings)
    return exit_code(summary, options)


def processor_for(settings: Settings) -> ProcessorFactory:
    """--direct writes through the worker's own routes and BatchProcessor, as `run` builds them."""

    def build(gateway: MongoGateway, letters: DeadLetterPublisher) -> BatchProcessor:
        return batch_processor(settings, routes_for(settings, gateway), letters)

    return build


def exit_code(summary: Summary, options: DlqReplayOptions) -> ExitCode:
    """A dry run: 0 if it counted up to the ends. A replay: 130, 3 (refused), then 0 if all went, else 1."""
    if options.dry_run:
        return ExitCode.OK if summary.error is None else ExitCode.PROBLEM
    if summary.interrupted:
        return ExitCode.INTERRUPTED
    if summary.refused:
        return ExitCode.UNREACHABLE
    return ExitCode.OK if summary.error is None and summary.dead_again == 0 else ExitCode.PROBLEM


def print_summary(summary: Summary, options: DlqReplayOptions, settings: Settings) -> None:
    """`dlq replay done|interrupted: read=.. chosen=.. replayed=.. still_dead=.. not_chosen=..`."""
    mode = "direct to MongoDB" if options.direct else "re-published to the source topics"
    state = "interrupted" if summary.interrupted else "done"
    print(f"dlq replay {state}: read={summary.read} chosen={summary.chosen} {summary.describe()} "
          f"({mode}; group {options.group_for(settings)})")  # fmt: skip
    for reason, count in sorted(summary.still_dead.items()):
        print(f"  still dead: {count} x {reason} (left in the dead-letter topic)")
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)


def print_dry_run(summary: Summary, total: int) -> None:
    """The counts, then per error type and a sample of the chosen records; nothing was sent."""
    print(f"dry run: {total} dead-lettered record(s) to read, {summary.chosen} chosen, "
          f"{summary.not_chosen} not chosen; nothing sent, nothing committed")  # fmt: skip
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
    if not summary.chosen:
        return
    counts = [(topic, kind, str(n)) for (topic, kind), n in sorted(summary.per_type.items())]
    print_tables(
        table("chosen per error type", ("dead-letter topic", "error type", "records"), counts),
        table(f"first {len(summary.sample)} chosen",
              ("topic", "partition", "offset", "error type", "reason", "message", "key"),
              map(_sample_row, summary.sample)),
    )  # fmt: skip


def _sample_row(record: Record) -> tuple[str, ...]:
    key = bytes(record.key).decode("utf-8", "replace") if record.key is not None else ""
    reason = header(record, HEADER_ERROR_REASON) or ""
    message = (header(record, HEADER_ERROR_MESSAGE) or "")[:60]
    return (record.topic, str(record.partition), str(record.offset), error_type(record), reason, message, key)
