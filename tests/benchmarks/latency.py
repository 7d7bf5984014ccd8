"""Publish→stored latency under a steady load below saturation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.benchmarks.backlog import Backlog, Publisher, events, publish_steadily
from tests.benchmarks.measure import cpu_seconds, percentile
from tests.benchmarks.worker_run import CommitWatcher, started_worker, stored_times
from tests.integration.harness import WorkerProcess
from worker.settings import Settings

WINDOW_S = 10.0
"""The windows the latency and CPU shares are reported by."""


@dataclass
class Latency:
    rate: float
    seconds: float
    count: int
    latencies_ms: list[float]
    routes: list[str]
    """Each record's route (the topic's last dotted part), in the order of `latencies_ms`."""
    published_s: list[float]
    """Each record's publish time, in seconds from the first publish."""
    cpu_by_window: dict[str, list[float]] = field(default_factory=dict)
    """Per process (the worker, each local server, this benchmark's publisher): its CPU share
    (1.0 = one core) in each WINDOW_S of publishing."""

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def by_route(self) -> dict[str, list[float]]:
        latencies: dict[str, list[float]] = {}
        for route, ms in zip(self.routes, self.latencies_ms, strict=True):
            latencies.setdefault(route, []).append(ms)
        return latencies

    def by_window(self, seconds: float = WINDOW_S) -> list[list[float]]:
        """Latencies grouped by when they were published: [0, seconds), [seconds, 2 x seconds), ..."""
        windows: list[list[float]] = [[] for _ in range(int(max(self.published_s, default=0) // seconds) + 1)]
        for moment, ms in zip(self.published_s, self.latencies_ms, strict=True):
            windows[int(moment // seconds)].append(ms)
        return windows


async def steady_load(
    settings: Settings, rate: float, seconds: float, log_path: Path, servers: Mapping[str, int] | None = None,
    *, kind: type[WorkerProcess] = WorkerProcess, name: str = "worker",
) -> Latency:  # fmt: skip
    """Publish `rate` events/s for `seconds` to a running worker (or the floor loop: `kind`, `name`);
    latency of each from its log, and the CPU share of the consumer, the `servers` (name -> pid) and
    the publisher meanwhile."""
    backlog = Backlog(settings)
    count = int(rate * seconds)
    # Made before the clock starts: the publisher shares the machine's cores with the worker and
    # the servers, and the demo factory's cost (about 100 µs an event) is not the worker's.
    ready = list(events(count, seed=23))
    async with started_worker(settings, log_path, kind) as worker:
        assert worker.process is not None
        processes: dict[str, int | str] = {
            name: worker.process.pid,
            **(servers or {}),
            "publisher": "self",
        }
        cpu_by_window: dict[str, list[float]] = {name: [] for name in processes}
        sampling = asyncio.create_task(_sample_cpu(processes, cpu_by_window))
        try:
            async with Publisher(backlog, keep_times=True) as publisher:
                await publish_steadily(publisher, iter(ready), rate, count=count)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        async with CommitWatcher(settings) as watcher:
            deadline = time.monotonic() + 300
            while await watcher.progress(backlog.ends) < backlog.count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"steady load not drained; log: {log_path}")
                await asyncio.sleep(0.25)
    stored = stored_times(log_path)
    missing = [key for key in backlog.published_at if key not in stored]
    if missing:
        raise RuntimeError(f"{len(missing)} records have no stored line; log: {log_path}")
    first = min(backlog.published_at.values())
    keys = sorted(backlog.published_at, key=backlog.published_at.__getitem__)
    return Latency(
        rate=rate,
        seconds=seconds,
        count=len(keys),
        latencies_ms=[(stored[key] - backlog.published_at[key]) * 1000 for key in keys],
        routes=[key[0].rpartition(".")[2] for key in keys],
        published_s=[backlog.published_at[key] - first for key in keys],
        cpu_by_window=cpu_by_window,
    )


async def _sample_cpu(processes: Mapping[str, int | str], shares: dict[str, list[float]]) -> None:
    """Append each process's CPU share over every WINDOW_S to `shares`, until cancelled."""
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    while True:
        await asyncio.sleep(WINDOW_S)
        for name, pid in processes.items():
            now = cpu_seconds(pid)
            shares[name].append((now - before[name]) / WINDOW_S)
            before[name] = now
