"""The exit codes every `persistence-worker` command uses (the README's "Exit codes" table)."""

from __future__ import annotations

from enum import IntEnum


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
