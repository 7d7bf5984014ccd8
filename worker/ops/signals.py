"""SIGINT and SIGTERM as a stop request: the one handler of `serve` and of the one-shot commands."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """While entered, SIGINT/SIGTERM set `stop`, then log `shutdown_requested`.

    A repeated signal cancels the task that made this handler when `cancel_on_repeat` (a one-shot
    job abandons its batch in hand); the service's drain is bounded by SHUTDOWN_TIMEOUT_S instead.
    """

    def __init__(self, stop: asyncio.Event, *, cancel_on_repeat: bool = True) -> None:
        self._stop = stop
        self._task = asyncio.current_task() if cancel_on_repeat else None

    def handle(self, sig: signal.Signals) -> None:
        """What a signal does. Stop first, log after: a failing log write must never keep the process
        running."""
        if self._stop.is_set() and self._task is not None:
            self._task.cancel()
        self._stop.set()
        with contextlib.suppress(Exception):
            log.info("shutdown_requested", signal=sig.name)

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.handle, sig)

    def __exit__(self, *_exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
