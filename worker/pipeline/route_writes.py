"""One route's records of a batch written in chunks, one chunk after the other, with retries.

Each chunk is sent as soon as it is full, so preparing the next one overlaps the server's
work; a chunk waits for the one before it (never two writes of a route at once), and an
outage met by one fails those after it without trying again. `RouteWrites.finish` gathers
the chunks' outcomes into the route's result: its dead letters, or its blocked partitions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.dead_letters.headers import ERROR_TYPE_PERSIST_REFUSED
from worker.dead_letters.letters import DeadLetter
from worker.errors import DocumentRefused, WorkerError
from worker.mongo.writers import WriteOutcome
from worker.ops import metrics
from worker.pipeline import log_lines
from worker.pipeline.failure_policy import RouteResult, on_outage
from worker.pipeline.records import Prepared
from worker.pipeline.routes import Route
from worker.pipeline.write_gate import WriteGate

WRITE_CHUNK = 250
"""Records per bulk write (a batch of one route is written in chunks, one after the other)."""

Documents = list[Mapping[str, Any]]


class Retrying(Protocol):
    """The retry policy around one write, e.g. `functools.partial(worker.retry.with_retries, policy)`."""

    def __call__(
        self, operation: str, call: Callable[[Documents], Awaitable[WriteOutcome]], argument: Documents
    ) -> Awaitable[WriteOutcome]: ...


@dataclass(frozen=True, slots=True)
class _Chunk:
    items: list[Prepared]
    task: asyncio.Task[WriteOutcome]
    started: float = field(default_factory=time.perf_counter)


class RouteWrites:
    """The chunks of one route in one batch: `start` each as it fills, then `finish` (or `cancel`)."""

    def __init__(self, route: Route, retrying: Retrying, gate: WriteGate) -> None:
        self._route = route
        self._retrying = retrying
        self._gate = gate
        self._chunks: list[_Chunk] = []

    def start(self, items: list[Prepared]) -> None:
        previous = self._chunks[-1].task if self._chunks else None
        self._chunks.append(_Chunk(items, asyncio.create_task(self._write_chunk(items, previous))))

    def cancel(self) -> None:
        for chunk in self._chunks:
            chunk.task.cancel()

    async def finish(self) -> RouteResult:
        """Wait for the chunks; one outcome, one log line per partition, as for one write."""
        done: list[tuple[list[Prepared], WriteOutcome]] = []
        failed: list[Prepared] = []
        failure: WorkerError | None = None
        for chunk in self._chunks:
            try:
                done.append((chunk.items, await chunk.task))
            except WorkerError as exc:
                failed.extend(chunk.items)
                failure = exc
        result = RouteResult()
        if done:
            latency = time.perf_counter() - self._chunks[0].started
            metrics.WRITE_LATENCY.labels(self._route.name.value).observe(latency)
            written = [item for items, _ in done for item in items]
            result.dead = self._refused(written, _joined(done))
        if failure is not None:
            lost = on_outage(self._route, failed, failure)
            result.dead.extend(lost.dead)
            result.blocked |= lost.blocked
        return result

    def _refused(self, written: list[Prepared], outcome: WriteOutcome) -> list[DeadLetter]:
        """The documents MongoDB refused, as dead letters; the route's canonical lines logged."""
        route = self._route
        dead = [
            DeadLetter(written[index].record, route.dlq_topic, ERROR_TYPE_PERSIST_REFUSED, "refused", reason)
            for index, reason in outcome.refused.items()
        ]
        for letter in dead:
            log_lines.log_refused_by_mongodb(letter)
        metrics.RECORDS_SKIPPED.labels(route.name.value).inc(len(outcome.skipped))
        log_lines.log_saved(route, written, outcome)
        return dead

    async def _write_chunk(
        self, items: list[Prepared], previous: asyncio.Task[WriteOutcome] | None
    ) -> WriteOutcome:
        """One bulk write with retries, after the route's previous chunk (never two at once)."""
        if previous is not None:
            await asyncio.wait([previous])
            failure = None if previous.cancelled() else previous.exception()
            if isinstance(failure, WorkerError):
                raise failure  # an outage (server down, operation refused): do not try all over again
        metrics.BATCH_SIZE.labels(self._route.name.value).observe(len(items))
        return await self._write_items(items)

    async def _write_items(self, items: list[Prepared]) -> WriteOutcome:
        """Write with retries; a refused document is isolated, any other failure is the chunk's outcome."""
        documents = [item.document for item in items]
        try:
            return await self._retrying(self._route.writer.collection, self._gated_write, documents)
        except DocumentRefused as exc:
            if len(items) == 1:
                return WriteOutcome(stored=0, refused={0: str(exc)})
            # One document may spoil the whole bulk write (e.g. BSON cannot encode it): isolate it.
            return await self._write_one_by_one(items)

    async def _gated_write(self, documents: Documents) -> WriteOutcome:
        """One attempt, in a slot of the write gate (not held across a retry's backoff)."""
        async with self._gate.turn(self._route.priority, self._route.name.value):
            return await self._route.writer.write(documents)

    async def _write_one_by_one(self, items: list[Prepared]) -> WriteOutcome:
        """Write each document alone; those refused become `refused`; an outage fails the chunk."""
        stored, skipped, refused = 0, set[int](), dict[int, str]()
        for index, item in enumerate(items):
            alone = await self._write_items([item])
            stored += alone.stored
            if alone.skipped:
                skipped.add(index)
            if alone.refused:
                refused[index] = next(iter(alone.refused.values()))
        return WriteOutcome(stored=stored, skipped=frozenset(skipped), refused=refused)


def _joined(done: list[tuple[list[Prepared], WriteOutcome]]) -> WriteOutcome:
    """The outcomes of the written chunks as one, indexes counted across them."""
    stored, skipped, refused, base = 0, set[int](), dict[int, str](), 0
    for items, outcome in done:
        stored += outcome.stored
        skipped.update(base + index for index in outcome.skipped)
        refused.update({base + index: reason for index, reason in outcome.refused.items()})
        base += len(items)
    return WriteOutcome(stored=stored, skipped=frozenset(skipped), refused=refused)
