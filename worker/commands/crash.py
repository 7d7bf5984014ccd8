"""The last resort: an error nobody planned for becomes one line and exit 70, not a traceback."""

from __future__ import annotations

import sys
import traceback

from worker.commands.exit_codes import ExitCode
from worker.ops.redaction import scrub


def report_unexpected(error: BaseException, *, debug: bool) -> int:
    """Print one scrubbed line (and the stack when `debug`) to stderr; the exit code to use."""
    if debug:
        print(scrub("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    summary = " ".join(str(error).split())[:300]
    hint = "" if debug else " (LOG_LEVEL=DEBUG shows the stack)"
    line = f"internal error: {type(error).__name__}: {summary}{hint}; please report it"
    print(scrub(line), file=sys.stderr)
    return ExitCode.INTERNAL
