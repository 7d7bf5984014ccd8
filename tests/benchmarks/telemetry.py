"""The telemetry phase: the worker buffering telemetry (ingest), then `redeliver` processes draining a
buffer that holds as many tombstones as pending documents, with one loop and with two.

A drain's progress is read from the loops' `telemetry_redelivered` lines (one per batch, written
once the batch is settled), not by counting documents: on nx-27017 a count walks the whole
collection and would stop every claim while it runs (the phase times one count to show it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from schemas.documents import telemetry_buffer_document
from schemas.events import TelemetryEvent
from tests.benchmarks.backlog import PARTITIONS, produce_backlog
from tests.benchmarks.measure import cpu_seconds, span_rate, tenth_rates
from tests.benchmarks.worker_run import START_POLL_S, buffered_writes, drain, log_lines, wait_for_log
from tests.integration.harness import RedeliverProcess, ensure_topics
from tests.support.events import EventFactory
from worker.mongo.collections import TELEMETRY_BUFFER
from worker.mongo.indexes import ensure_indexes, expected_indexes
from worker.settings import RouteName, Settings
from worker.telemetry.buffer import DELIVERED, PENDING_ONLY

Document = dict[str, Any]

SEED = 31
SEED_CHUNK = 5_000
POLL_S = 0.5
"""How often the loops' logs are read for the drain's end."""


@dataclass
class Ingest:
    """The worker buffering a telemetry backlog: records after its first write, over the time to its last."""

    events: int
    seconds: float
    cpu_share: dict[str, float]
    """Per process over the worker's whole drain (from its partitions' assignment to the last commit)."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class BufferDrain:
    """`loops` redeliver processes emptying a seeded telemetry_buffer."""

    loops: int
    pending: int
    tombstones: int
    points: list[tuple[float, int]]
    """(seconds since the first loop started, documents pending) after each settled batch."""
    cpu_share: dict[str, float]
    """Per process (each loop, the servers, this benchmark) over the drain."""
    batch_size: int
    count_s: float | None = None
    """Seconds one count of the pending documents took on the server, before the drain (if timed)."""

    @property
    def seconds(self) -> float:
        return self.points[-1][0]

    @property
    def rate(self) -> float:
        return self.pending / self.seconds

    def tenths(self) -> list[float]:
        return tenth_rates(self.points, self.pending)


@dataclass
class TelemetryRun:
    ingest: Ingest
    drains: list[BufferDrain]

    def drain(self, loops: int) -> BufferDrain | None:
        return next((d for d in self.drains if d.loops == loops), None)


async def ingest_run(
    settings: Settings, count: int, log_path: Path, server_pids: Mapping[str, int], *, timeout_s: float
) -> Ingest:
    """Publish `count` telemetry events and time the worker (`run`, no redelivery) buffering them."""
    backlog = await produce_backlog(settings, count, route=RouteName.TELEMETRY)
    drained = await drain(settings, backlog.ends, log_path, timeout_s=timeout_s, server_pids=server_pids)
    records, seconds = span_rate(buffered_writes(log_path, settings.kafka_topic_telemetry))
    return Ingest(records, seconds, drained.cpu_share)


def pending_documents(count: int, now: datetime) -> Iterator[Document]:
    """`count` buffer documents as the worker writes them, buffered 1 ms apart up to `now` (all due)."""
    factory = EventFactory(seed=SEED)
    for index in range(count):
        event = TelemetryEvent.model_validate(factory.telemetry())
        yield dict(telemetry_buffer_document(event, buffered_at=now - timedelta(milliseconds=count - index)))


def tombstones(count: int, now: datetime) -> Iterator[Document]:
    """`count` delivered documents as the redelivery leaves them."""
    for index in range(count):
        yield {"_id": f"delivered-{index:07d}", "state": DELIVERED, "delivered_at": now}


async def seed_buffer(settings: Settings, pending: int, delivered: int, *, time_count: bool) -> float | None:
    """A fresh telemetry_buffer with the worker's indexes, `delivered` tombstones then `pending`
    documents; with `time_count`, the seconds one count of the pending documents takes."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    try:
        await client.drop_database(settings.mongodb_database)
        database = client[settings.mongodb_database]
        await ensure_indexes(database, expected_indexes(settings))
        now = datetime.now(UTC)
        collection = database[TELEMETRY_BUFFER]
        await _insert(collection, tombstones(delivered, now))
        await _insert(collection, pending_documents(pending, now))
        if not time_count:
            return None
        started = time.perf_counter()
        counted = await collection.count_documents(PENDING_ONLY)
        if counted != pending:
            raise RuntimeError(f"seeded {pending} pending documents, the server counts {counted}")
        return time.perf_counter() - started
    finally:
        await client.close()


async def _insert(collection: AsyncCollection[Document], documents: Iterator[Document]) -> None:
    chunk: list[Document] = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == SEED_CHUNK:
            await collection.insert_many(chunk, ordered=False)
            chunk = []
    if chunk:
        await collection.insert_many(chunk, ordered=False)


async def count_pending(settings: Settings) -> int:
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    try:
        return await client[settings.mongodb_database][TELEMETRY_BUFFER].count_documents(PENDING_ONLY)
    finally:
        await client.close()


async def drain_run(
    settings: Settings, loops: int, seeded: tuple[int, int], log_dir: Path, server_pids: Mapping[str, int],
    *, timeout_s: float,
) -> BufferDrain:  # fmt: skip
    """Start `loops` redeliver processes on the seeded buffer ((pending, tombstones)); time them until
    their batches have settled every pending document; stop them."""
    total, delivered = seeded
    await ensure_topics(settings.kafka_bootstrap_servers, [settings.kafka_telemetry_delivery_topic],
                        partitions=PARTITIONS)  # fmt: skip
    processes = [
        RedeliverProcess(settings, log_dir / f"redeliver-{loops}x-{i + 1}.log") for i in range(loops)
    ]
    for process in processes:
        process.start()
    try:
        starts = [await wait_for_log(p, "telemetry_redelivery_started", within=120, poll_s=START_POLL_S)
                  for p in processes]  # fmt: skip
        names = ["redeliver"] if loops == 1 else [f"redeliver {i + 1}" for i in range(loops)]
        pids: dict[str, int | str] = {**dict(zip(names, (p.pid for p in processes), strict=True)),
                                      **server_pids, "benchmark": "self"}  # fmt: skip
        cpu_before, clock = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
        points = await _until_settled(processes, min(starts), total, timeout_s)
        wall = time.monotonic() - clock
        share = {name: (cpu_seconds(pid) - cpu_before[name]) / wall for name, pid in pids.items()}
    finally:
        codes = [process.terminate(timeout=60) for process in processes]
    if any(codes):
        raise RuntimeError(f"redeliver exited with {codes}; logs: {[str(p.log_path) for p in processes]}")
    if (left := await count_pending(settings)) != 0:
        raise RuntimeError(f"{left} documents still pending after the loops settled {total}")
    return BufferDrain(loops, total, delivered, points, share, settings.redelivery_batch_size)


async def _until_settled(
    processes: Sequence[RedeliverProcess], started: float, total: int, timeout_s: float
) -> list[tuple[float, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        points = pending_points(settled_batches([p.log_path for p in processes]), started, total)
        if points[-1][1] <= 0:
            return points
        exited = [p.log_path for p in processes if p.process is not None and p.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            raise RuntimeError(f"{total - points[-1][1]}/{total} settled; exited early: {exited}")
        await asyncio.sleep(POLL_S)


def settled_batches(log_paths: Sequence[Path]) -> list[tuple[float, int]]:
    """(time, documents made tombstones) of every `telemetry_redelivered` line in the loops' logs."""
    return [
        (datetime.fromisoformat(line["timestamp"]).timestamp(), removed(line))
        for path in log_paths
        if path.exists()
        for line in log_lines(path)
        if line.get("event") == "telemetry_redelivered"
    ]


def removed(line: Mapping[str, Any]) -> int:
    """The documents a batch settled as delivered: claimed, less every other outcome (its log line's counts)."""
    others = ("rescheduled", "parked", "unanswered", "lease_lost")
    return int(line["claimed"]) - sum(int(line[name]) for name in others)


def pending_points(
    batches: Sequence[tuple[float, int]], started: float, total: int
) -> list[tuple[float, int]]:
    """(seconds since `started`, documents pending) at the start and after each batch, in time order."""
    points, pending = [(0.0, total)], total
    for moment, count in sorted(batches):
        pending -= count
        points.append((moment - started, pending))
    return points
