"""What each command line hands over to: (settings, parsed arguments) -> exit code.

The command modules are imported when their command runs, so that `--help` and completion
stay fast and a command loads only what it uses.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from worker.commands.exit_codes import ExitCode
from worker.commands.signals import exit_cleanly_on_sigterm, until_stopped
from worker.ops.redaction import scrub
from worker.settings import Settings, unknown_variables


def run(settings: Settings, _args: argparse.Namespace) -> int:
    return _serve(settings, redelivery_only=False)


def redeliver(settings: Settings, args: argparse.Namespace) -> int:
    if not args.once:
        return _serve(settings, redelivery_only=True)
    exit_cleanly_on_sigterm()
    from worker.commands.redeliver import redeliver_once

    return asyncio.run(until_stopped(lambda stop: redeliver_once(settings, stop)))


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


def replay(settings: Settings, args: argparse.Namespace) -> int:
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


def dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.dlq_replay import DlqReplayOptions, dlq_replay_command
    from worker.settings import RouteName

    options = DlqReplayOptions(
        routes=tuple(RouteName(r) for r in args.route) if args.route else tuple(RouteName),
        error_types=frozenset(args.error_type or ()), from_offset=args.from_offset,
        from_time=args.from_time, direct=args.direct, dry_run=args.dry_run, group=args.group,
    )  # fmt: skip
    return asyncio.run(dlq_replay_command(settings, options))


def check(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.check import check_command

    return asyncio.run(check_command(settings, unknown_variables(), args.max_replicas))


def config(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.config import config_command

    return config_command(settings, unknown_variables())


def query(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.query import build_query, query_command

    bound = build_query(args.name, plan_id=getattr(args, "plan_id", None), status=getattr(args, "status", ""),
                        severity=getattr(args, "severity", ""), limit=getattr(args, "limit", 0))  # fmt: skip
    return asyncio.run(query_command(settings, args.name, bound, as_json=args.json))


def indexes_ensure(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.indexes import indexes_command

    return asyncio.run(indexes_command(settings, create=True))


def indexes_check(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.commands.indexes import indexes_command

    return asyncio.run(indexes_command(settings, create=False))
