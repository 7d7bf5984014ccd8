"""`persistence-worker`: parses the command line, configures logging, hands over.

The grammar is in worker.commands.parser, what each command runs in worker.commands.handlers,
and the exit codes (the same for every command) in worker.commands.exit_codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from worker.commands.exit_codes import ExitCode
from worker.commands.parser import build_parser
from worker.ops.memory import fix_mmap_threshold
from worker.settings import Settings, SettingsError, load_settings
from worker.settings_typos import UnknownVariable

REPORT_VARIABLES_THEMSELVES = frozenset({"check", "config"})
"""Commands that print the misspelled-looking variables in their own output: no log warning as well."""


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
            from worker.commands.completion import completion_script

            print(completion_script(parser, args.shell))
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
        handler: Callable[[Settings, argparse.Namespace], int] = args.handler
        return int(handler(settings, args))
    except SettingsError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return ExitCode.CONFIGURATION
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        from worker.commands.crash import report_unexpected

        return report_unexpected(exc, debug=debug)


def _reader_gone() -> int:
    """The reader closed stdout (`| head`): it has what it wanted; end quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    return ExitCode.OK


def _start(settings: Settings, unknown: list[UnknownVariable], *, warn: bool, renamed_to: str | None) -> None:
    """Logging configured, misspelled-looking variables logged, the allocator tuned."""
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
