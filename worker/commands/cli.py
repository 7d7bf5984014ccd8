"""`persistence-worker`: the command line's grammar, each option's help beside it, and the dispatch.

    persistence-worker run | check | config | completion SHELL
    persistence-worker indexes check|ensure
    persistence-worker query NAME [options]                     (worker.mongo.queries' GUIDE_QUERIES)
    persistence-worker telemetry redeliver|replay [options]     (the telemetry buffer)
    persistence-worker dlq replay [options]                     (dead-letter topics)

`redeliver` and `replay` alone are the former spellings of the telemetry ones: hidden, kept
for one release, with a `command_renamed` warning. Every outcome is one of the exit codes of
worker.commands.exits. A command's module (check, indexes, query, telemetry, dlq) is imported
when the command runs: `--help`, completion and usage errors skip aiokafka, rich and the
pipeline (measured: about 0.5 s of CPU less per `--help`, half of it).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import shtab

from worker.commands.exits import ExitCode, exit_cleanly_on_sigterm, exit_codes_help, report_unexpected
from worker.dead_letters.headers import ERROR_TYPES, UNKNOWN_ERROR_TYPE
from worker.mongo.queries import GUIDE_QUERIES, Parameter
from worker.ops.about import worker_version
from worker.ops.memory import fix_mmap_threshold
from worker.ops.redaction import scrub
from worker.settings import RouteName, Settings, SettingsError, load_settings
from worker.settings_typos import UnknownVariable

Handler = Callable[[Settings, argparse.Namespace], int]
REPORT_VARIABLES_THEMSELVES = frozenset({"check", "config"})
"""Commands that print the misspelled-looking variables in their own output: no log warning as well."""
RENAMED = {"redeliver": "telemetry redeliver", "replay": "telemetry replay"}
SHELLS = ("bash", "zsh")
EXIT_CODES_POINTER = "exit codes: the same for every command, listed by `persistence-worker --help`"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load the settings, hand over; every outcome is one of the documented exit codes."""
    try:
        code = _parse_and_run(argv)
        sys.stdout.flush()  # a reader gone (`| head`) shows here, not at exit as a traceback
        return code
    except BrokenPipeError:
        return _reader_gone()


def _parse_and_run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "completion":
            print(shtab.complete(parser, shell=args.shell))
            return ExitCode.OK
        return _hand_over(args)
    except SystemExit as exc:  # --help, --version, a usage error (2), SIGTERM during start-up (0)
        code = ExitCode.OK if exc.code is None else exc.code
        return code if isinstance(code, int) else ExitCode.PROBLEM


def _hand_over(args: argparse.Namespace) -> int:
    debug = False
    try:
        settings, unknown = load_settings()
        debug = settings.log_level == "DEBUG"
        warn = args.command not in REPORT_VARIABLES_THEMSELVES
        _start(settings, unknown, warn=warn, renamed_to=getattr(args, "renamed_to", None))
        handler: Handler = args.handler
        return int(handler(settings, args))
    except SettingsError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return ExitCode.CONFIGURATION
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        return report_unexpected(exc, debug=debug)


def _reader_gone() -> int:
    """The reader closed stdout (`| head`): it has what it wanted; end quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    return ExitCode.OK


def _start(settings: Settings, unknown: list[UnknownVariable], *, warn: bool, renamed_to: str | None) -> None:
    """Logging configured, misspelled-looking variables logged, the allocator tuned."""
    import structlog  # with the logging set-up, 0.2 s that --help and usage errors need not pay

    from worker.ops.logging import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    if renamed_to:
        advice = f"this spelling goes in the next release; use `persistence-worker {renamed_to}`"
        structlog.get_logger("worker.commands").warning("command_renamed", now=renamed_to, message=advice)
    log = structlog.get_logger("worker.settings")
    for variable in unknown if warn else ():
        log.warning("settings_unknown_variable", variable=variable.name, did_you_mean=variable.suggestion,
                    message=variable.describe())  # fmt: skip
    fix_mmap_threshold()  # before any Kafka buffer is allocated: see worker/ops/memory.py


# The grammar.


def build_parser() -> argparse.ArgumentParser:
    description = inspect.cleandoc("""
        Consumes the workflow orchestrator's events from Kafka and keeps MongoDB's audit and
        observability collections: validation_audit, workflow_results, incidents, telemetry_buffer.
        All settings come from environment variables (MONGODB_URI, KAFKA_BOOTSTRAP_SERVERS, ...);
        see docs/configuration.md, or `persistence-worker config` for the values in effect.""")
    parser = Parser(prog="persistence-worker", description=description, epilog=exit_codes_help(),
                    formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {worker_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command(commands, "run", "consume events and write MongoDB (the service)", _run, """
        Start the consumers: validation, results, incidents and telemetry events are validated
        and written to MongoDB in batches; bad records go to <topic>.dlq with headers naming the
        error. Offsets are committed only once records are stored or dead-lettered. Logs are
        JSON lines on stderr (console format on a terminal). SIGTERM/SIGINT drain and exit 0.""")  # fmt: skip
    _add_indexes(commands)
    _add_check_and_config(commands)
    _add_queries(commands)
    _add_telemetry(commands)
    _add_dlq(commands)
    shell = command(commands, "completion", "print a shell completion script", None, """
        Print a shell completion script for the commands and their options. For bash:
          persistence-worker completion bash > /etc/bash_completion.d/persistence-worker
        For zsh, into a directory of your $fpath:
          persistence-worker completion zsh > "${fpath[1]}/_persistence-worker\"""")  # fmt: skip
    shell.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    for old, new in RENAMED.items():
        _add_telemetry_command(commands, old, hidden=True).set_defaults(renamed_to=new)
    parser.unlisted = frozenset(RENAMED)
    return parser


def command(
    group: Any, name: str, summary: str, handler: Handler | None, description: str, *, hidden: bool = False
) -> argparse.ArgumentParser:
    """A subcommand with its help (`description` as written, its indentation removed), and the
    function it hands over to; the exit codes are in the top command's help only."""
    listed = {} if hidden else {"help": summary}
    parser: argparse.ArgumentParser = group.add_parser(
        name, description=inspect.cleandoc(description), epilog=EXIT_CODES_POINTER,
        formatter_class=HelpFormatter, **listed,
    )  # fmt: skip
    parser.set_defaults(handler=handler)
    return parser


def _add_indexes(commands: Any) -> None:
    indexes = command(commands, "indexes", "check or create the collections' indexes", None, """
        The indexes the persistence guide lists, with the TTL of each collection's retention
        setting. `check` compares and changes nothing: each line says what `ensure` would do
        (would create, would update TTL). `ensure` does it (idempotent). An index with the right
        keys but other options is a conflict: reported, never dropped (exit 1).""")  # fmt: skip
    actions = indexes.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(actions, "check", "compare; say what `ensure` would do (changes nothing)", _indexes_check, """
        Compare the expected and present indexes; change nothing. Each line: ok, would create
        (missing), would update TTL (`ensure` sets it in place), or CONFLICT (same keys, other
        options: drop or modify it by hand). Exit 0 if nothing is missing or conflicting.""")  # fmt: skip
    command(actions, "ensure", "create missing indexes, set TTLs, report conflicts", _indexes_ensure, """
        Create the missing indexes and set changed TTLs in place (collMod); report conflicts
        without touching them. Idempotent: safe to run at every deployment. Exit 0 when every
        index is as expected afterwards, 1 on a conflict.""")  # fmt: skip


def _add_check_and_config(commands: Any) -> None:
    summary = "pre-flight: servers, topics, indexes, write concern (exit 0, 1, 3)"
    check = command(commands, "check", summary, _check, """
        The pre-flight (and the container's exec probe): Kafka answers and has every topic the worker
        reads or writes (it creates none); MongoDB answers, its indexes, the write concern in force.
        One line per finding (ok, warning, not ok); exit 0 if none is not ok, 1 if a topic is missing
        or an index conflicts, 3 if a server does not answer within 1.5 s. Variables that look like
        misspelled settings are reported as warnings.""")  # fmt: skip
    check.add_argument("--max-replicas", type=count(1), metavar="N",
                       help="KEDA's maxReplicaCount: name input topics with fewer partitions")  # fmt: skip
    command(commands, "config", "print the effective settings and where each came from", _config, """
        Print every setting's value (secrets hidden) and whether it came from the environment or
        is the default, then the variables that look like misspelled settings.""")  # fmt: skip


def _add_queries(commands: Any) -> None:
    query = command(commands, "query", "the persistence guide's example queries", None, """
        The persistence guide's queries: a table on a terminal, or --json for scripts. Each query
        is a subcommand with its own options (`query plan-history PLAN_ID`, `query workflows
        --status FAILED`, `query incidents --severity HIGH`).""")  # fmt: skip
    names = query.add_subparsers(dest="name", required=True, metavar="QUERY")
    for guide in GUIDE_QUERIES.values():
        sub = command(names, guide.name, guide.help, _query, f"{guide.help[:1].upper()}{guide.help[1:]}.")
        for parameter in guide.parameters:
            _add_parameter(sub, parameter)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_parameter(sub: argparse.ArgumentParser, parameter: Parameter) -> None:
    """A required parameter as an argument (PLAN_ID); the others as options: a number from 1, or text."""
    if parameter.default is None:
        sub.add_argument(parameter.name, metavar=parameter.name.upper(), help=parameter.help)
    elif isinstance(parameter.default, int):
        sub.add_argument(f"--{parameter.name}", type=count(1, parameter.maximum), default=parameter.default,
                         metavar="N", help=parameter.help)  # fmt: skip
    else:
        text = str.upper if parameter.any_case else str
        sub.add_argument(f"--{parameter.name}", type=text, choices=parameter.choices or None,
                         default=parameter.default, help=parameter.help)  # fmt: skip


def _add_telemetry(commands: Any) -> None:
    summary = "the telemetry buffer: redeliver (the loop), replay (chosen documents, now)"
    telemetry = command(commands, "telemetry", summary, None, """
        The telemetry buffer (telemetry_buffer): what could not be sent to
        KAFKA_TELEMETRY_DELIVERY_TOPIC when it arrived waits there.
          redeliver  the redelivery loop alone: sends what is due, on its backoff schedule
                     (`run` also runs it unless REDELIVERY_ENABLED=false)
          replay     a one-off: re-sends the documents chosen by filters now, whatever their
                     schedule (parked ones too, on request)
        For dead-lettered Kafka records (<topic>.dlq), see `dlq replay`.""")  # fmt: skip
    actions = telemetry.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_telemetry_command(actions, "redeliver")
    _add_telemetry_command(actions, "replay")


def _add_telemetry_command(group: Any, name: str, *, hidden: bool = False) -> argparse.ArgumentParser:
    adders = {"redeliver": _add_redeliver, "replay": _add_telemetry_replay}
    return adders[name](group, hidden=hidden)


def _add_redeliver(group: Any, *, hidden: bool) -> argparse.ArgumentParser:
    summary = "deliver what is due, on the loop's schedule (the loop alone)"
    # One line of this help is longer than the code's: the help reads as written.
    redeliver = command(group, "redeliver", summary, _redeliver, hidden=hidden, description="""
        Run the telemetry redelivery loop alone (`run` also runs it unless REDELIVERY_ENABLED=false):
        deliver telemetry_buffer documents to KAFKA_TELEMETRY_DELIVERY_TOPIC, oldest first, each
        claimed with a lease so that several replicas never send one document at the same time. Once
        Kafka acknowledges it (acks=all) a document stays only as a tombstone for
        TELEMETRY_DEDUP_WINDOW_S, so the same event read again is not delivered twice; a failure reschedules it
        with exponential backoff; after TELEMETRY_MAX_DELIVERY_ATTEMPTS it is parked. Logs:
        telemetry_redelivered, telemetry_redelivery_failed, telemetry_parked. Without --once it runs
        until SIGTERM/SIGINT (exit 0).""")  # fmt: skip  # noqa: E501
    redeliver.add_argument("--once", action="store_true",
                           help="deliver what is due now, print a summary, exit (0: all went)")  # fmt: skip
    return redeliver


def _add_telemetry_replay(group: Any, *, hidden: bool) -> argparse.ArgumentParser:
    summary = "re-send the buffered documents chosen by filters, now"
    replay = command(group, "replay", summary, _telemetry_replay, hidden=hidden, description="""
        Re-send buffered telemetry chosen by the filters to KAFKA_TELEMETRY_DELIVERY_TOPIC (or
        --to-topic), with the loop's own claims: a document the loop or another replay holds is
        skipped, never sent twice at once. A sent document becomes a tombstone as a redelivered one
        does (--keep: it stays pending). Parked documents are left out unless --include-parked or
        --parked-only; backoff schedules are ignored. --dry-run prints the count and the first rows
        and sends nothing. Ctrl-C finishes the batch in hand and stops; nothing is lost, nothing
        stays claimed. Progress and summary count sent, failed and skipped (held by another worker,
        or gone). Exit 0 if every chosen document was sent, 1 if some were not.""")  # fmt: skip
    _add_replay_arguments(replay)
    return replay


def _add_replay_arguments(replay: argparse.ArgumentParser) -> None:
    add = replay.add_argument
    add("--workflow-id", help="only this workflow (correlation.workflow_id)")
    add("--plan-id", help="only this plan (correlation.plan_id)")
    add(
        "--since", type=instant, metavar="ISO", help="from this instant, inclusive (ISO-8601, UTC if no zone)"
    )
    add("--until", type=instant, metavar="ISO", help="up to this instant, exclusive")
    add("--time-field", choices=("timestamp", "buffered_at"), default="timestamp",
        help="what --since/--until compare: the event's timestamp (default) or buffered_at")  # fmt: skip
    add("--min-retry-count", type=count(0), metavar="N", help="only documents tried at least N times")
    parked = replay.add_mutually_exclusive_group()
    parked.add_argument("--include-parked", action="store_true", help="parked documents too")
    parked.add_argument("--parked-only", action="store_true", help="parked documents only")
    add("--limit", type=count(1), metavar="N", help="at most N documents (the oldest buffered)")
    add("--to-topic", help="send there instead of KAFKA_TELEMETRY_DELIVERY_TOPIC")
    add("--keep", action="store_true", help="leave sent documents in the buffer")
    add("--dry-run", action="store_true", help="print the count and the first rows; send nothing")


def _add_dlq(commands: Any) -> None:
    dlq = command(commands, "dlq", "dead-letter topics: replay their records", None, """
        Dead-letter topics (<input topic>KAFKA_DLQ_SUFFIX): the Kafka records the worker could not
        store, with x-error-* headers saying why. For buffered telemetry, see `telemetry`.""")  # fmt: skip
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    summary = "re-publish dead-lettered records, or write them to MongoDB"
    replay = command(actions, "replay", summary, _dlq_replay, """
        Read dead-letter topics (<input topic>KAFKA_DLQ_SUFFIX, all four unless --route) up to their
        end at the start, keep the records whose x-error-type is chosen (--error-type, all if not
        given) and re-publish each one's key, value and headers to its source topic, without our
        x-error-*/x-source-*/x-failed-at headers and with x-replayed-from; or, with --direct,
        validate and write them straight to MongoDB through the worker's writers. Stored records
        are stored once however often they are replayed. A record that fails validation again
        stays dead-lettered and is counted as still_dead; records of other types are not_chosen.
        Offsets are committed per batch under the run's own consumer group (default
        <KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]), so the next run continues where this
        one stopped. Exit 0 if every chosen record was replayed, 1 if not.""")  # fmt: skip
    add = replay.add_argument
    add("--route", action="append", choices=[route.value for route in RouteName],
        help="the dead-letter topic of this route (repeatable; default: all four)")  # fmt: skip
    add("--error-type", action="append", choices=(*ERROR_TYPES, UNKNOWN_ERROR_TYPE),
        help="only records with this x-error-type (repeatable; default: all)")  # fmt: skip
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=count(0), metavar="N",
                       help="start every partition at offset N instead of the group's position")  # fmt: skip
    start.add_argument("--from-time", type=instant, metavar="ISO",
                       help="start at the first record at or after this instant")  # fmt: skip
    add("--direct", action="store_true", help="validate and write to MongoDB instead of re-publishing")
    add("--dry-run", action="store_true", help="counts per error type, a sample; nothing sent or committed")
    add("--group", help="consumer group keeping this replay's position")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; room for the longest command name (telemetry-retries) beside its help."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


class Parser(argparse.ArgumentParser):
    """A parser whose "invalid choice" names only the commands its help lists, not the `unlisted`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unlisted: frozenset[str] = frozenset()

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's message names every choice, the hidden former spellings included.
        if self.unlisted and action.choices is not None and value not in action.choices:
            listed = ", ".join(repr(name) for name in action.choices if name not in self.unlisted)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {listed})")
        super()._check_value(action, value)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date or date-time; without a zone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date or time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def instant(text: str) -> datetime:
    """`parse_instant` as an argparse type, so that a mistake is exit 2 with a readable message."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number within [minimum, maximum], as an argparse type."""
    bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        number = int(text) if text.isdigit() else None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {text!r}")
        return number

    parse.__name__ = "count"
    return parse


# The dispatch: (settings, parsed arguments) -> exit code. Each imports its command's module.


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    return _serve(settings, redelivery_only=False)


def _redeliver(settings: Settings, args: argparse.Namespace) -> int:
    if not args.once:
        return _serve(settings, redelivery_only=True)
    exit_cleanly_on_sigterm()  # before the slow imports: a SIGTERM during them is a clean exit
    from worker.commands import telemetry

    return telemetry.redeliver_once(settings)


def _serve(settings: Settings, *, redelivery_only: bool) -> int:
    """Run the service (or the redelivery loop alone) until SIGTERM/SIGINT: exit 0; no start: exit 3."""
    exit_cleanly_on_sigterm()  # before the slow imports: a SIGTERM during them is a clean exit
    from worker.app import StartupError, run_redelivery, run_worker, serve

    try:
        asyncio.run(serve(settings, runner=run_redelivery if redelivery_only else run_worker))
    except StartupError as exc:
        print(scrub(f"error: {exc}"), file=sys.stderr)
        return ExitCode.UNREACHABLE
    return ExitCode.OK


def _telemetry_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import telemetry

    return telemetry.replay(settings, args)


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import dlq

    return dlq.replay(settings, args)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import check

    return check.check(settings, args)


def _config(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import check

    return check.config(settings, args)


def _query(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import query

    return query.query(settings, args)


def _indexes_check(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import indexes

    return indexes.check(settings, args)


def _indexes_ensure(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands import indexes

    return indexes.ensure(settings, args)
