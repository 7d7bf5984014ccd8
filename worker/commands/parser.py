"""The command line's grammar: every command, its options, their bounds and choices, and its help.

    persistence-worker run | check | config | completion SHELL
    persistence-worker indexes check|ensure
    persistence-worker query NAME [options]
    persistence-worker telemetry redeliver|replay [options]     (the telemetry buffer)
    persistence-worker dlq replay [options]                     (dead-letter topics)

`redeliver` and `replay` alone are the former spellings of the telemetry ones: hidden, kept
for one release, with a `command_renamed` warning.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from schemas.events import Severity
from worker.commands import handlers, help_texts
from worker.commands.arguments import count, instant
from worker.commands.exit_codes import exit_codes_help
from worker.commands.query import COLUMNS, DEFAULT_LIMIT, HELP, LIMITED, MAX_LIMIT
from worker.ops.about import worker_version
from worker.pipeline.dead_letters import ERROR_TYPES as DEAD_LETTER_ERROR_TYPES
from worker.settings import RouteName

Handler = Callable[..., int]
ERROR_TYPES = (*DEAD_LETTER_ERROR_TYPES, "unknown")
"""The x-error-type values a dead letter can carry ("unknown": a record without one)."""
RENAMED = {"redeliver": "telemetry redeliver", "replay": "telemetry replay"}
SHELLS = ("bash", "zsh")
EXIT_CODES_POINTER = "exit codes: the same for every command, listed by `persistence-worker --help`"


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="persistence-worker", description=help_texts.DESCRIPTION, epilog=exit_codes_help(),
        formatter_class=HelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {worker_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command(commands, "run", "consume events and write MongoDB (the service)", help_texts.RUN, handlers.run)
    _add_indexes(commands)
    check = command(commands, "check", "pre-flight: servers, topics, indexes, write concern (exit 0, 1, 3)",
                    help_texts.CHECK, handlers.check)  # fmt: skip
    check.add_argument("--max-replicas", type=count(1), metavar="N",
                       help="KEDA's maxReplicaCount: name input topics with fewer partitions")  # fmt: skip
    command(commands, "config", "print the effective settings and where each came from",
            help_texts.CONFIG, handlers.config)  # fmt: skip
    _add_queries(commands)
    _add_telemetry(commands)
    _add_dlq(commands)
    shell = command(commands, "completion", "print a shell completion script", help_texts.COMPLETION)
    shell.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    for old, new in RENAMED.items():
        _add_telemetry_command(commands, old, hidden=True).set_defaults(renamed_to=new)
    parser.unlisted = frozenset(RENAMED)
    return parser


def command(
    group: Any,
    name: str,
    summary: str,
    description: str,
    handler: Handler | None = None,
    *,
    hidden: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand with its help, and the function it hands over to (the exit codes are in the
    top command's help only)."""
    listed = {} if hidden else {"help": summary}
    parser: argparse.ArgumentParser = group.add_parser(
        name, description=description, epilog=EXIT_CODES_POINTER, formatter_class=HelpFormatter, **listed
    )
    parser.set_defaults(handler=handler)
    return parser


def _add_indexes(commands: Any) -> None:
    indexes = command(commands, "indexes", "check or create the collections' indexes", help_texts.INDEXES)
    actions = indexes.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(actions, "check", "compare; say what `ensure` would do (changes nothing)",
            help_texts.INDEXES_CHECK, handlers.indexes_check)  # fmt: skip
    command(actions, "ensure", "create missing indexes, set TTLs, report conflicts",
            help_texts.INDEXES_ENSURE, handlers.indexes_ensure)  # fmt: skip


def _add_queries(commands: Any) -> None:
    query = command(commands, "query", "the persistence guide's example queries", help_texts.QUERY)
    names = query.add_subparsers(dest="name", required=True, metavar="QUERY")
    for name in COLUMNS:
        sub = command(names, name, HELP[name], f"{HELP[name][:1].upper()}{HELP[name][1:]}.", handlers.query)
        if name == "plan-history":
            sub.add_argument("plan_id", metavar="PLAN_ID", help="the plan (validation_audit.plan_id)")
        if name == "workflows":
            sub.add_argument("--status", type=str.upper, default="FAILED",
                             help="any case: COMPLETED, FAILED, PARTIAL, ... (default FAILED)")  # fmt: skip
        if name == "incidents":
            sub.add_argument("--severity", type=str.upper, choices=[s.value for s in Severity],
                             default=Severity.CRITICAL.value, help="any case (default CRITICAL)")  # fmt: skip
        if name in LIMITED:
            sub.add_argument("--limit", type=count(1, MAX_LIMIT), default=DEFAULT_LIMIT, metavar="N",
                             help=f"rows at most, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")  # fmt: skip
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_telemetry(commands: Any) -> None:
    summary = "the telemetry buffer: redeliver (the loop), replay (chosen documents, now)"
    telemetry = command(commands, "telemetry", summary, help_texts.TELEMETRY)
    actions = telemetry.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_telemetry_command(actions, "redeliver")
    _add_telemetry_command(actions, "replay")


def _add_telemetry_command(group: Any, name: str, *, hidden: bool = False) -> argparse.ArgumentParser:
    if name == "redeliver":
        redeliver = command(group, name, "deliver what is due, on the loop's schedule (the loop alone)",
                            help_texts.REDELIVER, handlers.redeliver, hidden=hidden)  # fmt: skip
        once = "deliver what is due now, print a summary, exit (0: all went)"
        redeliver.add_argument("--once", action="store_true", help=once)
        return redeliver
    replay = command(group, name, "re-send the buffered documents chosen by filters, now",
                     help_texts.REPLAY, handlers.replay, hidden=hidden)  # fmt: skip
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
    dlq = command(commands, "dlq", "dead-letter topics: replay their records", help_texts.DLQ)
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = command(actions, "replay", "re-publish dead-lettered records, or write them to MongoDB",
                     help_texts.DLQ_REPLAY, handlers.dlq_replay)  # fmt: skip
    add = replay.add_argument
    add("--route", action="append", choices=[route.value for route in RouteName],
        help="the dead-letter topic of this route (repeatable; default: all four)")  # fmt: skip
    add("--error-type", action="append", choices=ERROR_TYPES,
        help="only records with this x-error-type (repeatable; default: all)")  # fmt: skip
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=count(0), metavar="N",
                       help="start every partition at offset N instead of the group's position")  # fmt: skip
    start.add_argument("--from-time", type=instant, metavar="ISO",
                       help="start at the first record at or after this instant")  # fmt: skip
    add("--direct", action="store_true", help="validate and write to MongoDB instead of re-publishing")
    add("--dry-run", action="store_true", help="counts per error type, a sample; nothing sent or committed")
    add("--group", help="consumer group keeping this replay's position")
