"""The worker as a real process (`python -m worker run`): drain time, RSS, and its log lines."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from tests.benchmarks.backlog import create_topics
from tests.benchmarks.measure import SavedLine, cpu_seconds, steady_span
from tests.integration.harness import WorkerProcess
from worker.settings import RouteName, Settings

SAVED_EVENTS = frozenset(
    {"validation_audit_saved", "workflow_result_saved", "incident_saved", "telemetry_buffered", "floor_saved"}
)
"""The log lines that say records are stored: the worker's four, and the floor loop's (tests.benchmarks.floor)."""
T = TypeVar("T")

POLL_S = 0.25
START_POLL_S = 0.02
"""How often the log is read for the line that starts a drain: the worker's CPU is read then, so a
late read would leave the drain's first records' CPU out."""


@dataclass
class RssSample:
    elapsed_s: float
    done: int
    rss_mib: float


@dataclass
class Drain:
    events: int
    """The backlog drained."""
    counted_events: int
    """The records stored once every member had its partitions, whose CPU `cpu_seconds` holds."""
    timed_events: int
    """Of those, the records stored once every route had written once (see `steady_span`)."""
    seconds: float
    """From the last route's first saved line to the last saved line."""
    peak_rss_mib: float = 0.0
    samples: list[RssSample] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """Per process (worker, servers): CPU seconds used from the moment every member had its
    partitions to the last commit (/proc/<pid>/stat)."""
    cpu_window_s: float = 0.0
    """The wall seconds over which `cpu_seconds` were read."""
    route_done_s: dict[str, float] = field(default_factory=dict)
    """Per route (the topic's last dotted part): seconds from the partitions' assignment to its last
    stored record."""

    @property
    def rate(self) -> float:
        return self.timed_events / self.seconds

    @property
    def cpu_share(self) -> dict[str, float]:
        """Per process: CPU seconds / the wall seconds they were read over (1.0 = one core busy)."""
        return {name: spent / self.cpu_window_s for name, spent in self.cpu_seconds.items()}

    def cpu_us_per_event(self, name: str = "worker") -> float:
        """CPU µs of process `name` per record it counted (`counted_events`)."""
        return self.cpu_seconds[name] / self.counted_events * 1e6


def read_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def log_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as log:
        for line in log:
            if line.startswith(b"{"):
                yield orjson.loads(line)


def log_time(path: Path, event: str) -> float | None:
    for line in log_lines(path):
        if line.get("event") == event:
            return datetime.fromisoformat(line["timestamp"]).timestamp()
    return None


class CommitWatcher:
    """Reads the group's committed offsets (without joining the group)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_consumer_group,
            enable_auto_commit=False,
        )

    async def __aenter__(self) -> CommitWatcher:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def progress(self, ends: Mapping[TopicPartition, int]) -> int:
        """Records committed so far over the partitions of `ends`."""
        total = 0
        for tp, end in ends.items():
            total += min(await self._consumer.committed(tp) or 0, end)
        return total


class FloorProcess(WorkerProcess):
    """The floor loop (`python -m tests.benchmarks.floor`) as a process, with the worker's environment."""

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.benchmarks.floor"], env=self._env, stdout=log, stderr=log
            )


@contextlib.asynccontextmanager
async def started_worker(
    settings: Settings, log_path: Path, kind: type[WorkerProcess] = WorkerProcess
) -> AsyncIterator[WorkerProcess]:
    """A worker process (or the floor loop: `kind`) on the run's topics (created first), once the
    group has given it partitions of every route's topic (with ROUTE_ISOLATION a member per route,
    each assigned on its own); terminated on exit (its exit code is then `worker.process.returncode`)."""
    await create_topics(settings)
    worker = kind(settings, log_path)
    worker.start()
    try:
        await wait_for_assignment(worker, {settings.topic_for(route) for route in RouteName}, within=120)
        yield worker
    finally:
        worker.terminate(timeout=60)


def assigned_topics(path: Path) -> set[str]:
    """The topics named by the `partitions_assigned` lines of a worker log so far."""
    return {
        partition.rpartition(":")[0]
        for line in log_lines(path)
        if line.get("event") == "partitions_assigned"
        for partition in line["partitions"]
    }


def all_assigned_at(lines: Iterable[Mapping[str, Any]], topics: set[str]) -> float | None:
    """The time of the `partitions_assigned` line by which every topic of `topics` had partitions
    (with ROUTE_ISOLATION a member per route, each assigned on its own); None before."""
    seen: set[str] = set()
    for line in lines:
        if line.get("event") == "partitions_assigned":
            seen |= {partition.rpartition(":")[0] for partition in line["partitions"]}
            if topics <= seen:
                return datetime.fromisoformat(line["timestamp"]).timestamp()
    return None


async def wait_for_assignment(
    worker: WorkerProcess, topics: set[str], *, within: float, poll_s: float = POLL_S
) -> float:
    """Until the worker's members have been assigned partitions of every topic in `topics`; the
    time of the line that completed them."""
    return await _wait_in_log(worker, lambda path: all_assigned_at(log_lines(path), topics), within=within,
                              poll_s=poll_s, what=f"partitions of {sorted(topics)} assigned")  # fmt: skip


async def wait_for_log(worker: WorkerProcess, event: str, *, within: float, poll_s: float = POLL_S) -> float:
    """The time of the worker's first `event` line."""
    return await _wait_in_log(worker, lambda path: log_time(path, event), within=within, poll_s=poll_s,
                              what=event)  # fmt: skip


async def _wait_in_log(
    worker: WorkerProcess, found: Callable[[Path], T | None], *, within: float, poll_s: float, what: str
) -> T:
    """Read the worker's log every `poll_s` until `found` returns something; fail if the worker
    exits or `within` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(f"worker exited early; log: {worker.log_path}")
        result = found(worker.log_path) if worker.log_path.exists() else None
        if result is not None:
            return result
        await asyncio.sleep(poll_s)
    raise RuntimeError(f"no {what} in {worker.log_path} within {within:g} s")


Observer = Callable[[int], contextlib.AbstractContextManager[object]]
"""Something watching the worker process (its pid) through a drain: the profiler."""


async def drain(
    settings: Settings,
    ends: Mapping[TopicPartition, int],
    log_path: Path,
    *,
    timeout_s: float,
    server_pids: Mapping[str, int] | None = None,
    observe: Observer | None = None,
) -> Drain:
    """Start the worker on a backlog and wait until every offset is committed.

    The drain runs at full width once every route's member has its partitions (with ROUTE_ISOLATION
    they join one after another, about a second apart; the first may store records meanwhile):
    `drain_figures` counts the records stored after that moment, their CPU (of the worker and of
    each server in `server_pids`) read from then to the last commit, and the rate once every route
    has written once (`steady_span`). `observe(pid)` is entered at the first assignment and left once drained.
    """
    worker = WorkerProcess(settings, log_path)
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    topics = {settings.topic_for(route) for route in RouteName}
    try:
        assigned_at = await wait_for_log(worker, "partitions_assigned", within=120, poll_s=START_POLL_S)
        with observe(pid) if observe is not None else contextlib.nullcontext():
            full_width_at = await wait_for_assignment(worker, topics, within=120, poll_s=START_POLL_S)
            pids = {"worker": pid, **(server_pids or {})}
            cpu_before, cpu_from = {name: cpu_seconds(p) for name, p in pids.items()}, time.monotonic()
            samples = await _until_committed(worker, settings, ends, assigned_at, timeout_s)
            spent = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
            cpu_window = time.monotonic() - cpu_from
        counted, timed, seconds = drain_figures(saved_writes(log_path), full_width_at)
        route_done = {route: moment - assigned_at for route, moment in route_last_stored(log_path).items()}
        return Drain(
            events=sum(ends.values()), counted_events=counted, timed_events=timed, seconds=seconds,
            peak_rss_mib=read_status(pid)["VmHWM"], samples=samples, cpu_seconds=spent,
            cpu_window_s=cpu_window, route_done_s=route_done,
        )  # fmt: skip
    finally:
        code = worker.terminate(timeout=60)
        if code != 0:
            raise RuntimeError(f"worker exited with {code}; log: {log_path}")


async def _until_committed(
    worker: WorkerProcess, settings: Settings, ends: Mapping[TopicPartition, int], assigned_at: float,
    timeout_s: float,
) -> list[RssSample]:  # fmt: skip
    """Poll the group's commits every POLL_S until they reach `ends`; RSS sampled each time."""
    assert worker.process is not None
    total = sum(ends.values())
    samples: list[RssSample] = []
    async with CommitWatcher(settings) as watcher:
        deadline = time.monotonic() + timeout_s
        while True:
            done = await watcher.progress(ends)
            samples.append(
                RssSample(time.time() - assigned_at, done, read_status(worker.process.pid)["VmRSS"])
            )
            if done >= total:
                return samples
            if time.monotonic() > deadline or worker.process.poll() is not None:
                raise RuntimeError(f"worker drained {done}/{total} only; log: {worker.log_path}")
            await asyncio.sleep(POLL_S)


def drain_figures(lines: Sequence[SavedLine], full_width_at: float) -> tuple[int, int, float]:
    """(records stored after `full_width_at`; of those, the records and seconds of `steady_span`),
    from the saved lines of a drain."""
    after = [line for line in lines if line[0] > full_width_at]
    return (sum(count for _, count, _ in after), *steady_span(after))


def saved_writes(log_path: Path) -> list[SavedLine]:
    """(time, records, topic) of each saved line of a log, whatever the route."""
    return [
        (
            datetime.fromisoformat(line["timestamp"]).timestamp(),
            line["last_offset"] - line["offset"] + 1,
            line["topic"],
        )
        for line in log_lines(log_path)
        if line.get("event") in SAVED_EVENTS
    ]


def route_last_stored(log_path: Path) -> dict[str, float]:
    """Per route (the topic's last dotted part): the time of its last `*_saved` line."""
    last: dict[str, float] = {}
    for line in log_lines(log_path):
        if line.get("event") in SAVED_EVENTS:
            last[line["topic"].rpartition(".")[2]] = datetime.fromisoformat(line["timestamp"]).timestamp()
    return last


def stored_times(log_path: Path) -> dict[tuple[str, int, int], float]:
    """When each record was stored: the time of the `*_saved` line covering its offset."""
    stored: dict[tuple[str, int, int], float] = {}
    for line in log_lines(log_path):
        if line.get("event") not in SAVED_EVENTS:
            continue
        moment = datetime.fromisoformat(line["timestamp"]).timestamp()
        for offset in range(line["offset"], line["last_offset"] + 1):
            stored[(line["topic"], line["partition"], offset)] = moment
    return stored


def buffered_writes(log_path: Path, topic: str) -> list[tuple[float, int]]:
    """(time, records) of each `telemetry_buffered` line of `topic` in a worker's log."""
    return [
        (datetime.fromisoformat(line["timestamp"]).timestamp(), line["last_offset"] - line["offset"] + 1)
        for line in log_lines(log_path)
        if line.get("event") == "telemetry_buffered" and line.get("topic") == topic
    ]
