"""`persistence-worker telemetry redeliver --once | replay`: the telemetry buffer's one-off jobs.

`redeliver --once` drains what is due through the loop's batches (worker.telemetry.loop);
`replay` re-sends chosen documents now (worker.telemetry.replay). Both print a summary line;
`replay` shows its progress and, with --dry-run, a table of the first documents.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from worker.commands.exits import ExitCode
from worker.commands.output import print_tables, reporting, table
from worker.errors import WorkerError
from worker.kafka.diagnose import kafka_failure
from worker.kafka.errors import converted
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.ops.messages import report_failure
from worker.ops.redaction import scrub
from worker.ops.signals import StopOnSignals
from worker.settings import Settings
from worker.telemetry.assembly import loop_for
from worker.telemetry.buffer import ParkedScope
from worker.telemetry.delivery import create_delivery_producer
from worker.telemetry.loop import DrainTotals, drain_due
from worker.telemetry.replay import ReplayJob, ReplayOptions, Selection, Tally, TelemetryReplay

SAMPLE_ROWS = 20
COLUMNS = ("buffer_id", "workflow_id", "plan_id", "source", "timestamp", "buffered_at", "retries", "state")


def redeliver_once(settings: Settings) -> int:
    return asyncio.run(drain_once(settings))


async def drain_once(settings: Settings) -> int:
    """Deliver what is due now, then exit: 0 if all of it went, 1 if not, 3 if a server cannot be reached.
    SIGINT/SIGTERM: the batch in hand is finished, then it stops (exit 1)."""
    stop = asyncio.Event()
    with StopOnSignals(stop):
        return await _drain_once(settings, stop)


async def _drain_once(settings: Settings, stop: asyncio.Event) -> int:
    gateway = gateway_for(settings)
    producer = create_delivery_producer(settings)
    try:
        unreachable = await _reach(gateway, producer.start)
        if unreachable is not None:
            print(f"error: cannot reach the servers: {unreachable}", file=sys.stderr)
            return ExitCode.UNREACHABLE
        started = time.monotonic()
        loop = loop_for(settings, gateway, producer, stop)
        totals, error = await drain_due(loop, settings.redelivery_batch_size)
    finally:
        await producer.stop()
        await gateway.close()
    _print_drained(totals, error, time.monotonic() - started)
    clean = error is None and not (totals.rescheduled or totals.parked or totals.lost or stop.is_set())
    return ExitCode.OK if clean else ExitCode.PROBLEM


async def _reach(gateway: MongoGateway, start_producer: Callable[[], Awaitable[None]]) -> str | None:
    """None once MongoDB and Kafka answer, else why not."""
    try:
        await gateway.connect()
    except WorkerError as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await converted(start_producer())
    except WorkerError as exc:
        return str(exc)  # "<aiokafka class>: <message>"
    return None


def _print_drained(totals: DrainTotals, error: str | None, elapsed_s: float) -> None:
    print(
        f"redeliver: delivered={totals.delivered} rescheduled={totals.rescheduled} parked={totals.parked} "
        f"in {elapsed_s:.1f}s ({totals.delivered / max(elapsed_s, 1e-9):.0f} documents/s)"
        + (f"; stopped: {error}" if error else "")
    )


def replay(settings: Settings, args: argparse.Namespace) -> int:
    parked = ParkedScope.ONLY if args.parked_only else ParkedScope.INCLUDE if args.include_parked else None
    selection = Selection(
        workflow_id=args.workflow_id, plan_id=args.plan_id, since=args.since, until=args.until,
        time_field=args.time_field, min_retry_count=args.min_retry_count,
        parked=parked or ParkedScope.EXCLUDE, limit=args.limit,
    )  # fmt: skip
    options = ReplayOptions(selection=selection, to_topic=args.to_topic, dry_run=args.dry_run, keep=args.keep)
    return asyncio.run(replay_command(settings, options))


async def replay_command(settings: Settings, options: ReplayOptions) -> int:
    """Exit 0 if every chosen document was sent, 1 if not, 3 if unreachable, 130 if interrupted."""
    run = TelemetryReplay(settings, options)
    try:
        try:
            ids = await run.choose()
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
        if options.dry_run:
            await _print_dry_run(run, ids)
            return ExitCode.OK
        if not ids:
            print(f"replay: nothing matches; nothing sent to {run.topic}")
            return ExitCode.OK
        return await _send(run, ids, settings, options)
    finally:
        await run.close()


async def _send(run: TelemetryReplay, ids: list[Any], settings: Settings, options: ReplayOptions) -> int:
    try:
        await run.start_producer()
    except WorkerError as exc:
        report_failure(kafka_failure(exc, settings))
        return ExitCode.UNREACHABLE
    stop = asyncio.Event()
    try:
        with StopOnSignals(stop), reporting("replay", len(ids), Tally()) as reporter:
            job = await run.send(ids, reporter, stop)
    finally:
        await _quietly(run.stop_producer())
    return _finish(job, len(ids), run.topic, keep=options.keep)


def _finish(job: ReplayJob, chosen: int, topic: str, *, keep: bool) -> int:
    """Print the summary; the exit code."""
    remaining = chosen - job.tally.done
    state = "interrupted" if job.interrupted(chosen) else "done"
    summary = f"replay {state}: chosen={chosen} {job.tally.describe()} not_attempted={remaining}"
    fate = "kept in the buffer" if keep else "removed from the buffer"
    error = f"; error: {job.error}" if job.error else ""
    print(scrub(f"{summary} topic={topic} (sent: {fate}){error}"))
    if job.tally.skipped:
        print(f"  {job.tally.skipped} skipped: being delivered by another worker, or no longer buffered")
    if job.interrupted(chosen):
        return ExitCode.INTERRUPTED
    return ExitCode.OK if job.tally.sent == chosen and job.error is None else ExitCode.PROBLEM


async def _quietly(stopping: Awaitable[None]) -> None:
    try:
        await stopping
    except Exception as exc:
        print(scrub(f"warning: closing the Kafka producer: {type(exc).__name__}: {exc}"), file=sys.stderr)


async def _print_dry_run(run: TelemetryReplay, ids: Sequence[Any]) -> None:
    """The count that would be sent and a table of the first rows; sends nothing."""
    print(f"dry run: {len(ids)} buffered document(s) would be sent to {run.topic}")
    if not ids:
        return
    first = ids[:SAMPLE_ROWS]
    found = await run.buffer.documents(first)
    rows = [_row(found[document_id]) for document_id in first if document_id in found]
    print_tables(table(f"first {len(first)} of {len(ids)}", COLUMNS, rows))


def _row(document: Mapping[str, Any]) -> list[str]:
    correlation = document.get("correlation") or {}
    return [
        str(document["_id"]),
        str(correlation.get("workflow_id", "")),
        str(correlation.get("plan_id", "")),
        str(document.get("source", "")),
        _when(document.get("timestamp")),
        _when(document.get("buffered_at")),
        str(document.get("retry_count", 0)),
        _state(document),
    ]


def _state(document: Mapping[str, Any]) -> str:
    if document.get("parked"):
        return f"parked: {document.get('last_error', '')}"[:80]
    if document.get("lease_owner"):
        return f"claimed by {document['lease_owner']} until {_when(document.get('lease_expires_at'))}"
    if document.get("next_attempt_at"):
        return f"retry after {_when(document['next_attempt_at'])}"
    return "due"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC)
        return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)
