"""SIGINT and SIGTERM as the one handler (worker.ops.signals) makes them: `serve`'s and the commands'."""

from __future__ import annotations

import asyncio
import os
import signal

from structlog.testing import capture_logs

from worker.ops.signals import StopOnSignals


async def signalled(sig: signal.Signals) -> None:
    """Send `sig` to this process and let the event loop run its handler."""
    os.kill(os.getpid(), sig)
    for _ in range(10):
        await asyncio.sleep(0.01)


async def test_a_signal_sets_stop_and_logs_the_request() -> None:
    """While entered, SIGTERM sets the stop event and logs `shutdown_requested` with the signal's name."""
    stop = asyncio.Event()
    with capture_logs() as logs, StopOnSignals(stop, cancel_on_repeat=False):
        await signalled(signal.SIGTERM)
    assert stop.is_set()
    assert [(line["event"], line["signal"]) for line in logs] == [("shutdown_requested", "SIGTERM")]


async def test_a_repeated_signal_cancels_a_one_shot_job() -> None:
    """A command's job (the task that made the handler) is cancelled by a second signal, not by the first."""
    stop = asyncio.Event()

    async def job() -> str:
        with StopOnSignals(stop):
            await signalled(signal.SIGINT)
            assert stop.is_set()
            try:
                await signalled(signal.SIGINT)
            except asyncio.CancelledError:
                return "cancelled"
            return "went on"

    assert await asyncio.create_task(job()) == "cancelled"


async def test_a_repeated_signal_leaves_the_service_draining() -> None:
    """`serve`'s handler (cancel_on_repeat=False) only logs a second request: the drain is bounded already."""
    stop = asyncio.Event()

    async def service() -> str:
        with capture_logs() as logs, StopOnSignals(stop, cancel_on_repeat=False):
            await signalled(signal.SIGTERM)
            await signalled(signal.SIGTERM)
        assert [line["event"] for line in logs] == ["shutdown_requested"] * 2
        return "drained"

    assert await asyncio.create_task(service()) == "drained"
