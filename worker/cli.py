"""`persistence-worker`: parses the command line, configures logging, hands over.

Exit codes: 0 success; 1 the command ran and found a problem (e.g. an index conflict);
2 bad usage or configuration; 3 a server could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from worker.settings import Settings, format_settings_error

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

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
        "check", help="exit 0 if MongoDB and Kafka answer, 1 if not (an exec probe)",
        description="Ping MongoDB and describe the Kafka cluster; exit 0 if both answer, 1 if not.",
    ).set_defaults(handler=_check)  # fmt: skip
    _add_query_parser(commands)
    return parser


def _add_query_parser(commands: Any) -> None:
    from worker.query_commands import COLUMNS

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


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.check import check_command

    return asyncio.run(check_command(settings))


def _query(settings: Settings, args: argparse.Namespace) -> int:
    from worker.query_commands import build_query, query_command

    if args.name == "plan-history" and not args.plan_id:
        print("error: plan-history needs --plan-id", file=sys.stderr)
        return EXIT_USAGE
    query = build_query(
        args.name, plan_id=args.plan_id, status=args.status, severity=args.severity, limit=args.limit
    )
    return asyncio.run(query_command(settings, args.name, query, as_json=args.json))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(format_settings_error(exc), file=sys.stderr)
        return EXIT_USAGE
    from worker.logging import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(settings, args)


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.app import StartupError, serve

    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


def _indexes_ensure(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.index_commands import indexes_command

    return asyncio.run(indexes_command(settings, create=True))


def _indexes_check(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.index_commands import indexes_command

    return asyncio.run(indexes_command(settings, create=False))
