"""Route isolation: incidents published at a steady rate while the worker drains a telemetry backlog.

Each incident's publish → stored latency is read from the worker's log (as in the latency phase),
during the drain and once the worker is idle; the drain's own rate from its telemetry log lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.backlog import Backlog, Publisher, publish_steadily, route_events
from tests.benchmarks.measure import span_rate
from tests.benchmarks.worker_run import CommitWatcher, buffered_writes, started_worker, stored_times
from tests.integration.harness import WorkerProcess
from worker.settings import RouteName, Settings

IDLE_PAUSE_S = 1.0
INCIDENT_SEED = 29


@dataclass
class IsolationRun:
    isolation: bool
    drained: int
    """Telemetry records stored after the drain's first write (see `span_rate`)."""
    drain_seconds: float
    during_ms: list[float]
    """Latency of the incidents published while the telemetry backlog drained."""
    idle_ms: list[float]
    """Latency of the incidents published once it was drained."""

    @property
    def drain_rate(self) -> float:
        return self.drained / self.drain_seconds


async def isolation_run(
    settings: Settings, telemetry: Backlog, log_path: Path, *, rate: float, idle: int, timeout_s: float
) -> IsolationRun:
    """Start a worker (with `settings`, ROUTE_ISOLATION among them) on the telemetry backlog and
    publish incidents at `rate` through its drain, then `idle` more once it is drained."""
    incidents = Backlog(settings)
    async with started_worker(settings, log_path) as worker:
        stream = route_events(RouteName.INCIDENTS, 1_000_000, seed=INCIDENT_SEED)
        async with Publisher(incidents, keep_times=True) as publisher, CommitWatcher(settings) as watcher:
            await _wait_for(lambda: watcher.progress(telemetry.ends), 1, worker, timeout_s, "drain start")
            drained = asyncio.Event()
            during = asyncio.create_task(publish_steadily(publisher, stream, rate, until=drained))
            try:
                await _wait_for(
                    lambda: watcher.progress(telemetry.ends), telemetry.count, worker, timeout_s, "drain"
                )
                drained_at = time.time()
            finally:
                drained.set()
                await during
            await asyncio.sleep(IDLE_PAUSE_S)
            await publish_steadily(publisher, stream, rate, count=idle)
        async with CommitWatcher(settings) as watcher:
            await _wait_for(
                lambda: watcher.progress(incidents.ends), incidents.count, worker, 300, "incidents"
            )
    code = worker.process.returncode if worker.process is not None else None
    if code != 0:
        raise RuntimeError(f"worker exited with {code}; log: {log_path}")
    during_ms, idle_ms = _latencies(incidents, log_path, drained_at)
    records, seconds = span_rate(buffered_writes(log_path, settings.kafka_topic_telemetry))
    return IsolationRun(settings.route_isolation, records, seconds, during_ms, idle_ms)


async def _wait_for(
    progress: Callable[[], Awaitable[int]], target: int, worker: WorkerProcess, within: float, what: str
) -> None:
    """Poll `progress` until it reaches `target`; fail if the worker exits or `within` s pass."""
    deadline = time.monotonic() + within
    while (done := await progress()) < target:
        if time.monotonic() > deadline or (worker.process is not None and worker.process.poll() is not None):
            raise RuntimeError(f"{what}: {done}/{target} after {within:g} s; log: {worker.log_path}")
        await asyncio.sleep(0.1)


def _latencies(incidents: Backlog, log_path: Path, drained_at: float) -> tuple[list[float], list[float]]:
    """(during, idle) latencies in ms: incidents sent before the drain was seen complete, and after."""
    stored = stored_times(log_path)
    missing = [key for key in incidents.published_at if key not in stored]
    if missing:
        raise RuntimeError(f"{len(missing)} incidents have no stored line; log: {log_path}")
    during = [(stored[k] - sent) * 1000 for k, sent in incidents.published_at.items() if sent < drained_at]
    idle = [(stored[k] - sent) * 1000 for k, sent in incidents.published_at.items() if sent >= drained_at]
    return during, idle
