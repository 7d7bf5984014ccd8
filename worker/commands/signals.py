"""Signals as the commands handle them: a stop request for the one-shot jobs, a clean exit at start-up."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from worker.commands.exit_codes import ExitCode
from worker.ops.signals import StopOnSignals as StopOnSignals  # the one handler, shared with `serve`


async def until_stopped(job: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run `job` with a stop event that SIGINT/SIGTERM set; its exit code."""
    stop = asyncio.Event()
    with StopOnSignals(stop):
        return await job(stop)


def exit_cleanly_on_sigterm() -> None:
    """Until the event loop installs its own handlers, SIGTERM means "exit 0 now".

    Python's default would end the process by the signal (exit 143 in Kubernetes) when it
    arrives during start-up; nothing has been consumed or claimed yet, so leaving is clean.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(ExitCode.OK)

    signal.signal(signal.SIGTERM, leave)
