"""The one stop-aware wait: sleep for a while unless the stop is requested first."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_stop(stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `stop`; True if it was set (now or during the wait)."""
    if timeout_s <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=timeout_s)
    return stop.is_set()
