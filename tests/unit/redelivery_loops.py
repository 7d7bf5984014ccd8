"""A RedeliveryLoop paced by Settings, around the unit tests' fake buffers and publishers."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.ops.health import Liveness
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.loop import RedeliveryLoop


def loop_from(
    settings: Settings, *, buffer: Any, publisher: Any, stop: asyncio.Event, liveness: Liveness | None = None
) -> RedeliveryLoop:
    """The loop `redeliver` would build from `settings`, on the given fakes (the buffer's lease is the loop's)."""
    return RedeliveryLoop(
        buffer=buffer,
        publisher=publisher,
        stop=stop,
        batch_size=settings.redelivery_batch_size,
        idle_poll_s=settings.redelivery_idle_poll_s,
        retry_policy=RetryPolicy.for_redelivery(settings),
        liveness=liveness,
    )
