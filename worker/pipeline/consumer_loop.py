"""The consumer loop: poll a batch, process it, commit, and hold back blocked partitions.

Offsets are committed only for partitions whose every record is in MongoDB or in a
dead-letter topic. A partition blocked by a fail-closed route is sought back to its
first unsafe offset and paused; it is resumed after a backoff that grows per attempt.
Any other failure of a batch (the dead-letter topic unreachable, a bug) seeks every
partition of the batch back and retries the whole batch after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from worker.errors import TransientError, WorkerError
from worker.kafka.consumer import GroupConsumer, TopicPartition
from worker.kafka.lag import CommitLag
from worker.ops import metrics
from worker.ops.waiting import wait_for_stop
from worker.pipeline.batch import BatchOutcome, BatchProcessor
from worker.pipeline.records import Batch

log = structlog.get_logger(__name__)


class _FinishInFlightBatch:
    """On revoke, wait for the batch in hand to be committed before giving partitions up."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._loop.processing:
            self._loop.forget(revoked)
        log.info("partitions_revoked", partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=_names(assigned))


class ConsumerLoop:
    """Polls batches of at most `max_records` and hands them to the processor until `stop` is set.

    `backoff(attempt)` is the wait in seconds after failed attempt number `attempt` (1-based):
    of a blocked partition before it is resumed, and of a failed batch before it is retried.
    """

    def __init__(
        self,
        *,
        consumer: GroupConsumer,
        processor: BatchProcessor,
        stop: asyncio.Event,
        poll_timeout_ms: int,
        max_records: int,
        backoff: Callable[[int], float],
        report_lag: Callable[[Mapping[str, int]], None] | None = None,
        linger_ms: int = 0,
        urgent_topics: Iterable[str] = (),
    ) -> None:
        self._consumer, self._processor, self._stop = consumer, processor, stop
        self._report_lag = report_lag
        self._topics: list[str] = []
        self._poll_timeout_ms, self._max_records = poll_timeout_ms, max_records
        self._linger_s = linger_ms / 1000
        self._urgent_topics = frozenset(urgent_topics)
        self._backoff = backoff
        self.processing = asyncio.Lock()
        self._paused: dict[TopicPartition, tuple[float, int]] = {}  # tp -> (resume at, attempts)
        self._batch_failures = 0
        self.last_progress = time.monotonic()
        self.lag = CommitLag()

    def subscribe(self, topics: list[str]) -> None:
        self._topics = list(topics)
        self._consumer.subscribe(topics, _FinishInFlightBatch(self))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = list(partitions)
        for tp in partitions:
            self._paused.pop(tp, None)
        self.lag.forget(partitions)
        self._processor.forget(partitions)

    async def run(self) -> None:
        """Until `stop` is set: poll, process, commit. Returns after the batch in hand."""
        while not self._stop.is_set():
            self._resume_due_partitions()
            batch = await self._poll_unless_stopped(self._poll_timeout_ms, self._max_records)
            if batch is None:
                return
            batch = await self._linger(batch)
            self.last_progress = time.monotonic()
            self.lag.saw(batch)
            retry_in = None
            if batch:
                async with self.processing:
                    retry_in = await self._handle(batch)
            await self.lag.publish(self._consumer)
            self._tell_lag(backing_off=retry_in is not None)
            if retry_in is not None:
                # Outside the lock: a revoke must not wait behind a backoff (rebalance first).
                await self._back_off(retry_in)

    def _tell_lag(self, *, backing_off: bool) -> None:
        """Each topic's lag to `report_lag` (the write gate's priority holds): what this loop can
        drain now, so 0 while it backs off, and without its paused partitions."""
        if self._report_lag is None:
            return
        paused = [tp for tp, (resume_at, _) in self._paused.items() if resume_at != float("inf")]
        lags = {topic: self.lag.records(topic, leaving_out=paused) for topic in self._topics}
        self._report_lag({topic: 0 if backing_off else lag for topic, lag in lags.items()})

    async def _linger(self, batch: Batch) -> Batch:
        """A batch short of `max_records`, topped up with what arrived in the next `linger_ms`.

        At a steady trickle each poll finds a few records per partition; waiting a little lets one
        write and one commit carry more, at that much added latency (docs/configuration.md, "Latency or
        throughput"). A full batch (a backlog), a batch holding a record of an urgent topic (the
        first route of ROUTE_PRIORITY) and a stop go on at once.
        """
        count = sum(map(len, batch.values()))
        if not self._linger_s or not count or count >= self._max_records:
            return batch
        if any(tp.topic in self._urgent_topics for tp, records in batch.items() if records):
            return batch
        if not await wait_for_stop(self._stop, self._linger_s):
            more = await self._poll_unless_stopped(0, self._max_records - count)
            batch = joined(batch, more) if more else batch
        # A revoke may have come during the wait: its partitions are another member's now.
        assigned = self._consumer.assignment()
        return {tp: records for tp, records in batch.items() if tp in assigned}

    async def _poll_unless_stopped(self, timeout_ms: int, max_records: int) -> Batch | None:
        """The next batch, or None once `stop` is set while waiting for it.

        A poll waits past its timeout while the group rebalances (aiokafka waits for the new
        assignment), which may not end while the broker is away: a stop must not wait for it.
        An undecodable record batch pauses its partition (worker.kafka.undecodable).
        """
        poll = asyncio.ensure_future(self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if poll.done():
            return poll.result()
        poll.cancel()  # no record is handed out before the poll returns: nothing is lost
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        return None

    async def _handle(self, batch: Batch) -> float | None:
        """Process and commit; if the batch failed, seek it back and return the wait before a retry."""
        assigned = self._consumer.assignment()
        live = {tp: records for tp, records in batch.items() if tp in assigned and records}
        try:
            result = await self._processor.process(live)
        except Exception as exc:
            return self._seek_back_for_retry(live, exc)
        self._batch_failures = 0
        await self._commit(result)
        self._hold_back(result.blocked)
        return None

    async def _commit(self, result: BatchOutcome) -> None:
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in result.commits.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except TransientError as exc:
            # The group moved on (rebalance): the new owner re-reads these; writes are idempotent.
            metrics.COMMITS_FAILED.inc()
            log.warning("commit_failed", error=str(exc), partitions=_names(offsets))
            return
        for tp in offsets:
            self._paused.pop(tp, None)
        self._processor.settled(offsets)
        self.lag.committed(offsets)
        log.debug("offsets_committed", offsets={f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()})

    def _hold_back(self, blocked: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in blocked.items():
            if tp not in assigned:
                continue
            attempts = self._paused.get(tp, (0.0, 0))[1] + 1
            delay = self._backoff(attempts)
            self._consumer.seek(tp, offset)
            self._consumer.pause(tp)
            self._paused[tp] = (time.monotonic() + delay, attempts)
            log.warning("partition_paused", topic=tp.topic, partition=tp.partition, offset=offset,
                        attempt=attempts, resume_in_s=round(delay, 3))  # fmt: skip

    def _resume_due_partitions(self) -> None:
        now = time.monotonic()
        assigned = self._consumer.assignment()
        due = [tp for tp, (at, _) in self._paused.items() if at <= now and tp in assigned]
        for tp in due:
            self._paused[tp] = (float("inf"), self._paused[tp][1])  # resumed; keep the attempt count
        if due:
            self._consumer.resume(*due)
            log.info("partitions_resumed", partitions=_names(due))

    def _seek_back_for_retry(self, batch: Batch, exc: Exception) -> float:
        """Seek every partition of a failed batch back to its first record; the backoff in seconds."""
        self._batch_failures += 1
        metrics.BATCHES_FAILED.inc()
        delay = self._backoff(self._batch_failures)
        expected = isinstance(exc, WorkerError | OSError)
        count = sum(map(len, batch.values()))
        log.error("batch_failed", error=f"{type(exc).__name__}: {exc}", records=count,
                  retry_in_s=round(delay, 3), exc_info=not expected)  # fmt: skip
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self._consumer.seek(tp, records[0].offset)
        return delay

    async def _back_off(self, delay: float) -> None:
        """Wait `delay` seconds before the retry, or less if the worker is stopping."""
        await wait_for_stop(self._stop, delay)


def joined(first: Batch, then: Batch) -> Batch:
    """`then`'s records after `first`'s, per partition. Where a partition's position moved back
    between the two polls (a rebalance gave it back at its committed offset), `then` starts at or
    before `first`'s records and replaces them: they are read again, never skipped."""
    merged = {tp: list(records) for tp, records in first.items()}
    for tp, records in then.items():
        before = merged.get(tp)
        if before and records and records[0].offset > before[-1].offset:
            before.extend(records)
        else:
            merged[tp] = list(records)
    return merged


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)
