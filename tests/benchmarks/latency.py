"""Publish→stored latency under a steady load below saturation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.backlog import Backlog, Publisher, events
from tests.benchmarks.measure import percentile
from tests.benchmarks.worker_run import CommitWatcher, started_worker, stored_times
from worker.settings import Settings

TICK_S = 0.02


@dataclass
class Latency:
    rate: float
    seconds: float
    count: int
    latencies_ms: list[float]

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def steady_load(settings: Settings, rate: float, seconds: float, log_path: Path) -> Latency:
    """Publish `rate` events/s for `seconds` to a running worker; latency of each from its log."""
    backlog = Backlog(settings)
    async with started_worker(settings, log_path):
        stream = events(int(rate * seconds) + 1, seed=23)
        async with Publisher(backlog, keep_times=True) as publisher:
            started = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(rate * elapsed)
                while sent < due:
                    await publisher.send(next(stream), stamp=True)
                    sent += 1
                await asyncio.sleep(TICK_S)
        async with CommitWatcher(settings) as watcher:
            deadline = time.monotonic() + 300
            while await watcher.progress(backlog.ends) < backlog.count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"steady load not drained; log: {log_path}")
                await asyncio.sleep(0.25)
    stored = stored_times(log_path)
    latencies = [
        (stored[key] - published) * 1000 for key, published in backlog.published_at.items() if key in stored
    ]
    if len(latencies) != backlog.count:
        raise RuntimeError(f"{backlog.count - len(latencies)} records have no stored line; log: {log_path}")
    return Latency(rate=rate, seconds=seconds, count=len(latencies), latencies_ms=latencies)
