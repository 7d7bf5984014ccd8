"""`persistence-worker`: parses the command line, configures logging, hands over.

Exit codes (worker.commands.exit_codes, the same for every command): 0 success; 1 the command ran
and found a problem (e.g. an index conflict); 2 bad usage or configuration; 3 a server
could not be reached or refused us; 70 an internal error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from worker.commands.exit_codes import ExitCode
from worker.commands.typos import UnknownVariable
from worker.ops.about import worker_version
from worker.ops.memory import fix_mmap_threshold
from worker.ops.redaction import scrub
from worker.settings import Settings, SettingsError, load_settings, unknown_variables

DESCRIPTION = """\
Consumes the workflow orchestrator's events from Kafka and keeps MongoDB's audit and
observability collections: validation_audit, workflow_results, incidents, telemetry_buffer.
All settings come from environment variables (MONGODB_URI, KAFKA_BOOTSTRAP_SERVERS, ...);
see the README's configuration table."""

RUN_HELP = """\
Start the consumers: validation, results, incidents and telemetry events are validated
and written to MongoDB in batches; bad records go to <topic>.dlq with headers naming the
error. Offsets are committed only once records are stored or dead-lettered. Logs are
JSON lines on stderr (console format on a terminal). SIGTERM/SIGINT drain and exit 0."""

INDEXES_HELP = """\
`ensure` creates the indexes the persistence guide lists (idempotent); `check` only
compares. Both exit 1 if an index with the right keys has other options (it is reported,
never dropped), 3 if MongoDB cannot be reached."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persistence-worker", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {worker_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter
    run = commands.add_parser(
        "run",
        help="consume events and write MongoDB (the service)",
        description=RUN_HELP,
        formatter_class=raw,
    )
    run.set_defaults(handler=_run)
    indexes = commands.add_parser("indexes", help="create or check the collections' indexes",
                                  description=INDEXES_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    action = indexes.add_subparsers(dest="action", required=True, metavar="ACTION")
    action.add_parser("ensure", help="create missing indexes, report conflicts").set_defaults(
        handler=_indexes_ensure
    )
    action.add_parser("check", help="compare expected and present indexes").set_defaults(
        handler=_indexes_check
    )
    commands.add_parser(
        "check", help="exit 0 if MongoDB and Kafka answer, 3 if not (an exec probe)",
        description="Ping MongoDB and describe the Kafka cluster; exit 0 if both answer, 3 if not. "
        "Variables that look like misspelled settings are reported as warnings.",
    ).set_defaults(handler=_check)  # fmt: skip
    commands.add_parser(
        "config", help="print the effective settings and where each came from",
        description="Print every setting's value (secrets hidden) and whether it came from the "
        "environment or is the default, then the variables that look like misspelled settings.",
    ).set_defaults(handler=_config)  # fmt: skip
    _add_query_parser(commands)
    _add_redelivery_parsers(commands)
    return parser


def _add_query_parser(commands: Any) -> None:
    from worker.commands.query import COLUMNS

    query = commands.add_parser(
        "query", help="the persistence guide's example queries",
        description="The guide's queries: a table on a terminal, or --json for scripts. Exit 3 if MongoDB "
        "cannot be reached.",
    )  # fmt: skip
    query.add_argument("name", choices=sorted(COLUMNS), help="which query")
    query.add_argument("--plan-id", help="plan for plan-history")
    query.add_argument("--status", default="FAILED", help="status for workflows (default FAILED)")
    query.add_argument("--severity", default="CRITICAL", help="severity for incidents (default CRITICAL)")
    query.add_argument("--limit", type=int, default=20, help="rows at most (default 20)")
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    query.set_defaults(handler=_query)


REDELIVER_HELP = """\
Run the telemetry redelivery loop alone (`run` also runs it unless REDELIVERY_ENABLED=false):
deliver telemetry_buffer documents to KAFKA_TELEMETRY_DELIVERY_TOPIC, oldest first, each
claimed with a lease so that several replicas never send one document at the same time. A
document leaves the buffer once Kafka acknowledges it (acks=all); a failure reschedules it
with exponential backoff; after TELEMETRY_MAX_DELIVERY_ATTEMPTS it is parked. Logs:
telemetry_redelivered, telemetry_redelivery_failed, telemetry_parked. Without --once it runs
until SIGTERM/SIGINT."""

REPLAY_HELP = """\
Re-send buffered telemetry chosen by the filters to KAFKA_TELEMETRY_DELIVERY_TOPIC (or
--to-topic), with the loop's own claims: a document the loop or another replay holds is
skipped, never sent twice at once. A sent document leaves the buffer as a redelivered one
does (--keep: it stays). Parked documents are left out unless --include-parked or
--parked-only; backoff schedules are ignored. --dry-run prints the count and the first rows
and sends nothing. Ctrl-C finishes the batch in hand and stops; nothing is lost, nothing
stays claimed. Exit 0 if every chosen document was sent, 1 if some were not (failed,
or skipped: held by another worker or gone), 3 if a server is unreachable, 130 if interrupted."""

DLQ_REPLAY_HELP = """\
Read dead-letter topics (<input topic>KAFKA_DLQ_SUFFIX, all four unless --route) up to their
end at the start, keep the records whose x-error-type is chosen (--error-type, all if not
given) and re-publish each one's key, value and headers to its source topic, without our
x-error-*/x-source-*/x-failed-at headers and with x-replayed-from; or, with --direct,
validate and write them straight to MongoDB through the worker's writers. Stored records
are stored once however often they are replayed. A record that fails validation again
stays dead-lettered and is counted. Offsets are committed per batch under the run's own
consumer group (default <KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]), so the next
run continues where this one stopped. Exit 0 if every chosen record was replayed, 1 if
not, 3 if a server is unreachable, 130 if interrupted."""


def _add_redelivery_parsers(commands: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    redeliver = commands.add_parser("redeliver", help="deliver buffered telemetry to Kafka (the loop alone)",
                                    description=REDELIVER_HELP, formatter_class=raw)  # fmt: skip
    redeliver.add_argument(
        "--once", action="store_true", help="deliver what is due now, print a summary, exit (0: all went)"
    )
    redeliver.set_defaults(handler=_redeliver)
    replay = commands.add_parser("replay", help="re-send chosen buffered telemetry",
                                 description=REPLAY_HELP, formatter_class=raw)  # fmt: skip
    _add_replay_arguments(replay)
    dlq = commands.add_parser("dlq", help="dead-letter topics", description="Dead-letter topic tools.")
    dlq_action = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_replay = dlq_action.add_parser("replay", help="replay dead-lettered records",
                                       description=DLQ_REPLAY_HELP, formatter_class=raw)  # fmt: skip
    _add_dlq_replay_arguments(dlq_replay)


def _instant(text: str) -> Any:
    from worker.commands.replay import parse_instant

    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum}")
        return int(text)

    return parse


def _add_replay_arguments(replay: argparse.ArgumentParser) -> None:
    add = replay.add_argument
    add("--workflow-id", help="only this workflow (correlation.workflow_id)")
    add("--plan-id", help="only this plan (correlation.plan_id)")
    add("--since", type=_instant, help="from this instant (ISO-8601; UTC if no zone), inclusive")
    add("--until", type=_instant, help="up to this instant, exclusive")
    add("--time-field", choices=("timestamp", "buffered_at"), default="timestamp",
        help="what --since/--until compare: the event's timestamp (default) or buffered_at")  # fmt: skip
    add("--min-retry-count", type=_count(0), metavar="N", help="only documents tried at least N times")
    parked = replay.add_mutually_exclusive_group()
    parked.add_argument("--include-parked", action="store_true", help="parked documents too")
    parked.add_argument("--parked-only", action="store_true", help="parked documents only")
    add("--limit", type=_count(1), metavar="N", help="at most N documents (the oldest buffered)")
    add("--to-topic", help="send there instead of KAFKA_TELEMETRY_DELIVERY_TOPIC")
    add("--keep", action="store_true", help="leave sent documents in the buffer")
    add("--dry-run", action="store_true", help="print the count and the first rows; send nothing")
    replay.set_defaults(handler=_replay)


def _add_dlq_replay_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.settings import RouteName

    add = parser.add_argument
    add("--route", action="append", choices=[route.value for route in RouteName],
        help="the dead-letter topic of this route (repeatable; default: all four)")  # fmt: skip
    add("--error-type", action="append", metavar="TYPE", help="only records with this x-error-type: "
        "validation, persist_failed, persist_refused (repeatable)")  # fmt: skip
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=_count(0), metavar="N",
                       help="start every partition at offset N instead of the group's position")  # fmt: skip
    start.add_argument("--from-time", type=_instant, metavar="ISO",
                       help="start at the first record at or after this instant")  # fmt: skip
    add("--direct", action="store_true", help="validate and write to MongoDB instead of re-publishing")
    add("--dry-run", action="store_true", help="counts per error type, a sample; nothing sent or committed")
    add("--group", help="consumer group keeping this replay's position")
    parser.set_defaults(handler=_dlq_replay)


def _redeliver(settings: Settings, args: argparse.Namespace) -> int:
    exit_cleanly_on_sigterm()
    from worker.app import StartupError, run_redelivery, serve

    if args.once:
        from worker.commands.redeliver import redeliver_once

        return asyncio.run(_with_stop(redeliver_once, settings))
    try:
        asyncio.run(serve(settings, runner=run_redelivery))
    except StartupError as exc:
        print(scrub(f"error: {exc}"), file=sys.stderr)
        return ExitCode.UNREACHABLE
    return ExitCode.OK


async def _with_stop(command: Callable[[Settings, asyncio.Event], Any], settings: Settings) -> int:
    from worker.commands.replay import StopOnSignals

    stop = asyncio.Event()
    with StopOnSignals(stop):
        code: int = await command(settings, stop)
    return code


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.replay import ReplayOptions, Selection, replay_command
    from worker.telemetry.buffer import ParkedScope

    parked = ParkedScope.ONLY if args.parked_only else ParkedScope.INCLUDE if args.include_parked else None
    selection = Selection(
        workflow_id=args.workflow_id, plan_id=args.plan_id, since=args.since, until=args.until,
        time_field=args.time_field, min_retry_count=args.min_retry_count,
        parked=parked or ParkedScope.EXCLUDE, limit=args.limit,
    )  # fmt: skip
    options = ReplayOptions(selection=selection, to_topic=args.to_topic, dry_run=args.dry_run, keep=args.keep)
    return asyncio.run(replay_command(settings, options))


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.dlq_replay import DlqReplayOptions, dlq_replay_command
    from worker.pipeline.dead_letters import (
        ERROR_TYPE_PERSIST_FAILED,
        ERROR_TYPE_PERSIST_REFUSED,
        ERROR_TYPE_VALIDATION,
    )
    from worker.settings import RouteName

    known = {ERROR_TYPE_VALIDATION, ERROR_TYPE_PERSIST_FAILED, ERROR_TYPE_PERSIST_REFUSED, "unknown"}
    unknown = set(args.error_type or ()) - known
    if unknown:
        print(f"error: unknown --error-type {sorted(unknown)}; known: {sorted(known)}", file=sys.stderr)
        return ExitCode.CONFIGURATION
    options = DlqReplayOptions(
        routes=tuple(RouteName(r) for r in args.route) if args.route else tuple(RouteName),
        error_types=frozenset(args.error_type or ()), from_offset=args.from_offset,
        from_time=args.from_time, direct=args.direct, dry_run=args.dry_run, group=args.group,
    )  # fmt: skip
    return asyncio.run(dlq_replay_command(settings, options))


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.check import check_command

    return asyncio.run(check_command(settings, unknown_variables()))


def _config(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.config import config_command

    return config_command(settings, unknown_variables())


def _query(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.query import build_query, query_command

    if args.name == "plan-history" and not args.plan_id:
        print("error: plan-history needs --plan-id", file=sys.stderr)
        return ExitCode.CONFIGURATION
    query = build_query(
        args.name, plan_id=args.plan_id, status=args.status, severity=args.severity, limit=args.limit
    )
    return asyncio.run(query_command(settings, args.name, query, as_json=args.json))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load the settings, hand over; every outcome is one of the documented exit codes."""
    args = build_parser().parse_args(argv)
    debug = False
    try:
        settings, unknown = load_settings()
        debug = settings.log_level == "DEBUG"
        _start(settings, unknown, warn=args.handler is not _config)
        handler: Callable[[Settings, argparse.Namespace], int] = args.handler
        return int(handler(settings, args))
    except SettingsError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return ExitCode.CONFIGURATION
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:
        from worker.commands.crash import report_unexpected

        return report_unexpected(exc, debug=debug)


def _start(settings: Settings, unknown: list[UnknownVariable], *, warn: bool) -> None:
    """Logging configured, misspelled-looking variables logged, the allocator tuned."""
    from worker.ops.logging import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    if warn:
        log = structlog.get_logger("worker.settings")
        for variable in unknown:
            log.warning("settings_unknown_variable", variable=variable.name, did_you_mean=variable.suggestion,
                        message=variable.describe())  # fmt: skip
    fix_mmap_threshold()  # before any Kafka buffer is allocated: see worker/ops/memory.py


def exit_cleanly_on_sigterm() -> None:
    """Until the event loop installs its own handlers, SIGTERM means "exit 0 now".

    Python's default would end the process by the signal (exit 143 in Kubernetes) when it
    arrives during start-up; nothing has been consumed or claimed yet, so leaving is clean.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(ExitCode.OK)

    signal.signal(signal.SIGTERM, leave)


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    exit_cleanly_on_sigterm()
    from worker.app import StartupError, serve

    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(scrub(f"error: {exc}"), file=sys.stderr)
        return ExitCode.UNREACHABLE
    return ExitCode.OK


def _indexes_ensure(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.indexes import indexes_command

    return asyncio.run(indexes_command(settings, create=True))


def _indexes_check(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.indexes import indexes_command

    return asyncio.run(indexes_command(settings, create=False))
