"""One polled batch -> documents written, dead letters sent, offsets to commit.

The processor decides; the consumer loop (worker.pipeline.consumer_loop) moves offsets. A partition
whose fail-closed route could not be written is "blocked": nothing of it is committed
or dead-lettered, and the loop re-reads it from its first offset later.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from worker.dead_letters.letters import DeadLetter, UnprocessableLetter, error_class
from worker.dead_letters.publisher import DeadLetterPublisher
from worker.kafka.consumer import TopicPartition
from worker.ops import metrics
from worker.pipeline import log_lines
from worker.pipeline.failure_policy import RouteResult
from worker.pipeline.prepare import Rejected, prepare
from worker.pipeline.records import Batch, Prepared, Record, source_of
from worker.pipeline.route_writes import WRITE_CHUNK, Retrying, RouteWrites
from worker.pipeline.routes import Route
from worker.pipeline.write_gate import WriteGate

Rejections = list[tuple[DeadLetter, Rejected]]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    commits: dict[TopicPartition, int]
    """Offset to commit (last processed + 1) per partition that is fully safe."""
    blocked: dict[TopicPartition, int]
    """First offset to re-read per partition held back by a fail-closed route."""
    stored: int
    dead_lettered: int


@dataclass(frozen=True, kw_only=True, eq=False)
class BatchProcessor:
    """Prepares, writes and dead-letters the records of a batch, per the routing table.

    `retrying` runs each write under the retry policy, and each attempt takes a slot of `gate`
    (shared by every route's processor); records larger than `max_event_bytes` or nested
    deeper than `max_depth` are dead-lettered unread.
    """

    routes: Mapping[str, Route]
    dead_letters: DeadLetterPublisher
    retrying: Retrying
    gate: WriteGate
    max_event_bytes: int
    max_depth: int

    async def process(self, batch: Batch) -> BatchOutcome:
        """Write every good record, dead-letter the rest; raises TransientError if the DLQ is down.

        A route's records are written in chunks of WRITE_CHUNK, one after the other: each chunk
        is sent as soon as it is prepared, so decoding the next chunk overlaps the server's work.
        """
        writes: dict[str, RouteWrites] = {}  # in the order their first chunk started
        rejected: Rejections = []
        try:
            items = await self._prepare_all(batch, writes, rejected)
            results = await asyncio.gather(*(route_writes.finish() for route_writes in writes.values()))
        except BaseException:
            for route_writes in writes.values():
                route_writes.cancel()
            raise
        return await self._conclude(batch, items, rejected, results)

    def settled(self, commits: Mapping[TopicPartition, int]) -> None:
        """Offsets committed: the dead letters of those records need not be remembered."""
        self.dead_letters.settled(commits)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: forget which of their dead letters were acknowledged."""
        self.dead_letters.forget(partitions)

    async def _prepare_all(
        self, batch: Batch, writes: dict[str, RouteWrites], rejected: Rejections
    ) -> list[Prepared]:
        """Prepare every record; start each route's chunk as it fills, and the rest at the end."""
        items: list[Prepared] = []
        filling: dict[str, list[Prepared]] = {}
        max_bytes, max_depth = self.max_event_bytes, self.max_depth
        for tp, records in batch.items():
            route = self.routes[tp.topic]
            chunk = filling.setdefault(tp.topic, [])
            for record in records:
                outcome = prepare(
                    route, record.value, record.headers, max_bytes=max_bytes, max_depth=max_depth
                )
                if isinstance(outcome, Rejected):
                    rejected.append((_rejection_letter(record, route.dlq_topic, outcome), outcome))
                    continue
                chunk.append(Prepared(tp, record, outcome.document, outcome.event_id))
                if len(chunk) >= WRITE_CHUNK:
                    items.extend(chunk)
                    self._start(writes, tp.topic, chunk)
                    chunk = filling[tp.topic] = []
                    await asyncio.sleep(0)  # let the chunk go out before preparing on
        for topic, rest in filling.items():
            if rest:
                items.extend(rest)
                self._start(writes, topic, rest)
        return items

    def _start(self, writes: dict[str, RouteWrites], topic: str, items: list[Prepared]) -> None:
        if topic not in writes:
            writes[topic] = RouteWrites(self.routes[topic], self.retrying, self.gate)
        writes[topic].start(items)

    async def _conclude(
        self, batch: Batch, items: list[Prepared], rejected: Rejections, results: Sequence[RouteResult]
    ) -> BatchOutcome:
        """Publish the dead letters of partitions not blocked, count, and say what to commit."""
        blocked = set().union(*(result.blocked for result in results))
        letters = [letter for result in results for letter in result.dead if _tp(letter) not in blocked]
        for letter, rejection in rejected:
            if _tp(letter) not in blocked:
                letters.append(letter)
                log_lines.log_rejection(letter, rejection)
        await self.dead_letters.publish(letters)
        _count(batch, letters, blocked, self.routes)
        written = len(items) if not blocked else sum(1 for item in items if item.tp not in blocked)
        stored = written - sum(len(r.dead) for r in results)
        return BatchOutcome(
            commits={tp: records[-1].offset + 1 for tp, records in batch.items() if tp not in blocked},
            blocked={tp: records[0].offset for tp, records in batch.items() if tp in blocked},
            stored=stored,
            dead_lettered=len(letters),
        )


def _count(
    batch: Batch, letters: list[DeadLetter], blocked: set[TopicPartition], routes: Mapping[str, Route]
) -> None:
    """Per route: records consumed, stored (not blocked, not dead-lettered), and dead-lettered by type."""
    dead_per_tp: dict[TopicPartition, int] = defaultdict(int)
    for letter in letters:
        route = routes[letter.record.topic].name.value
        metrics.RECORDS_DEAD_LETTERED.labels(route, letter.error_type).inc()
        dead_per_tp[_tp(letter)] += 1
    for tp, records in batch.items():
        route = routes[tp.topic].name.value
        metrics.RECORDS_CONSUMED.labels(route).inc(len(records))
        if tp not in blocked:
            metrics.RECORDS_STORED.labels(route).inc(len(records) - dead_per_tp[tp])


def _tp(letter: DeadLetter) -> TopicPartition:
    return source_of(letter.record)


def _rejection_letter(record: Record, dlq_topic: str, rejection: Rejected) -> DeadLetter:
    if rejection.error is None:
        return DeadLetter(record, dlq_topic, rejection.error_type, rejection.reason, rejection.detail)
    return UnprocessableLetter(
        record,
        dlq_topic,
        rejection.error_type,
        rejection.reason,
        rejection.detail,
        error_class(rejection.error),
    )
