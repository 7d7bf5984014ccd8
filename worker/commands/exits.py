"""How a command ends: its exit code (the one table, the README's "Exit codes"), SIGTERM at
start-up, and the last resort for an error nobody planned for. (The stop request of the
one-shot jobs is worker.ops.signals', shared with `run`.)"""

from __future__ import annotations

import signal
import sys
import traceback
from enum import IntEnum

from worker.ops.redaction import scrub


class ExitCode(IntEnum):
    """What a command's exit status means, the same for every command."""

    OK = 0
    """The command did what was asked."""
    PROBLEM = 1
    """The command ran and found a problem (an index conflict, records not replayed)."""
    CONFIGURATION = 2
    """Bad usage or configuration: fix the command line or the environment, nothing was tried."""
    UNREACHABLE = 3
    """A server could not be reached or refused us (authentication); the message names it."""
    INTERNAL = 70
    """A bug: an error nobody planned for (EX_SOFTWARE from sysexits.h)."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C or SIGTERM before the work was done (128 + SIGINT)."""


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done as asked",
    ExitCode.PROBLEM: "ran and found a problem (an index gap or conflict, records not sent or replayed)",
    ExitCode.CONFIGURATION: "bad usage or configuration; nothing was tried",
    ExitCode.UNREACHABLE: "a server could not be reached, or refused us (the message names it)",
    ExitCode.INTERNAL: "internal error, a bug (LOG_LEVEL=DEBUG shows the stack); please report it",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM) before the work was done",
}


def exit_codes_help() -> str:
    """The exit-code table every command's --help ends with."""
    rows = "\n".join(f"  {int(code):>3}  {MEANINGS[code]}" for code in ExitCode)
    return f"exit codes (the same for every command):\n{rows}"


def exit_cleanly_on_sigterm() -> None:
    """Until the event loop installs its own handlers, SIGTERM means "exit 0 now".

    Python's default would end the process by the signal (exit 143 in Kubernetes) when it
    arrives during start-up; nothing has been consumed or claimed yet, so leaving is clean.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(ExitCode.OK)

    signal.signal(signal.SIGTERM, leave)


def report_unexpected(error: BaseException, *, debug: bool) -> int:
    """Print one scrubbed line (and the stack when `debug`) to stderr; the exit code to use."""
    if debug:
        print(scrub("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    summary = " ".join(str(error).split())[:300]
    hint = "" if debug else " (LOG_LEVEL=DEBUG shows the stack)"
    line = f"internal error: {type(error).__name__}: {summary}{hint}; please report it"
    print(scrub(line), file=sys.stderr)
    return ExitCode.INTERNAL
