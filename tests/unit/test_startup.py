"""Start-up steps: the bounded wait for MongoDB, a taken HTTP port, and stopping before logging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from typing import Any

import pytest
from structlog.testing import capture_logs

import worker.app
import worker.ops.signals
from worker.errors import TransientError
from worker.ops.health import Health
from worker.ops.reachability import ServerReachability
from worker.ops.signals import StopOnSignals
from worker.settings import Settings
from worker.startup import MongoStartup, StartupError, bind_http, wait_until_mongodb_ready


class UnreachableGateway:
    """A gateway whose MongoDB never answers."""

    connected = False

    def __init__(self) -> None:
        self.attempts = 0
        self.tried_thrice = asyncio.Event()

    async def connect(self) -> Any:
        self.attempts += 1
        if self.attempts >= 3:
            self.tried_thrice.set()
        raise TransientError("No servers found yet")


def quick(**overrides: Any) -> MongoStartup:
    settings = Settings(retry_initial_interval_ms=1, retry_backoff_coefficient=0.001, retry_max_interval_ms=10,
                        **overrides)  # fmt: skip
    return MongoStartup.from_settings(settings)


async def test_bounded_wait_for_mongodb_raises_startup_error() -> None:
    """With MONGODB_STARTUP_TIMEOUT_S set, a MongoDB that never answers ends start-up with StartupError."""
    gateway = UnreachableGateway()
    mongodb = ServerReachability("mongodb", "m:1")
    with (
        capture_logs() as logs,
        pytest.raises(StartupError, match=re.escape("MONGODB_STARTUP_TIMEOUT_S=0.2")),
    ):
        await wait_until_mongodb_ready(gateway, quick(mongodb_startup_timeout_s=0.2), asyncio.Event(), mongodb)  # type: ignore[arg-type]
    assert gateway.attempts >= 2
    waiting = [line for line in logs if line["event"] == "mongodb_client_not_initialized"]
    assert len(waiting) == gateway.attempts - 1
    assert [line["event"] for line in logs].count("mongodb_unavailable") == 1
    assert mongodb.up is False


async def test_unbounded_wait_for_mongodb_ends_when_stopped() -> None:
    """Without a start-up timeout the wait goes on until a stop is requested, and reports no start."""
    gateway, stop = UnreachableGateway(), asyncio.Event()
    wait = asyncio.create_task(wait_until_mongodb_ready(gateway, quick(), stop, ServerReachability("mongodb", "m:1")))  # type: ignore[arg-type]
    await asyncio.wait_for(gateway.tried_thrice.wait(), timeout=10)
    assert not wait.done()
    stop.set()
    assert await wait is False


async def test_a_taken_http_port_is_a_startup_error() -> None:
    """Binding the probes' port when another process holds it raises StartupError naming the address."""
    health = Health(last_poll=None, mongodb_ready=lambda: True, has_assignment=lambda: True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(http_host="127.0.0.1", http_port=port)
        with pytest.raises(StartupError, match=re.escape(f"127.0.0.1:{port}: Address already in use")):
            await bind_http(health, host=settings.http_host, port=settings.http_port)


async def test_stop_is_requested_even_when_the_log_write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal sets the stop event first, so a log sink that raises cannot keep the worker running."""

    class BrokenLog:
        def info(self, *_args: Any, **_kwargs: Any) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(worker.ops.signals, "log", BrokenLog())
    stop = asyncio.Event()
    StopOnSignals(stop, cancel_on_repeat=False).handle(signal.SIGTERM)
    assert stop.is_set()


async def test_a_shutdown_past_its_timeout_names_what_it_waited_on() -> None:
    """When the drain outlives SHUTDOWN_TIMEOUT_S, `shutdown_timeout` says where each task still
    waits (outermost to innermost coroutine), so that the hang can be found from one log line."""
    async def stuck_in_a_rebalance(settings: Settings, stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.Event().wait()  # never set: a join the broker never answers

    async def stop_soon() -> None:
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    with capture_logs() as logs:
        stopper = asyncio.ensure_future(stop_soon())
        with contextlib.suppress(asyncio.CancelledError):
            await worker.app.serve(Settings(shutdown_timeout_s=0.2), runner=stuck_in_a_rebalance)
        await stopper
    (timeout,) = [line for line in logs if line["event"] == "shutdown_timeout"]
    assert any("stuck_in_a_rebalance" in place and "Event.wait" in place for place in timeout["waiting_on"])
