"""Specification of worker.pipeline.consumer_loop.ConsumerLoop with a fake consumer and processor: what is committed, paused, re-read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.support.kafka import FakeConsumer, FakeRecord
from tests.support.pipeline import FakeProcessor
from worker.errors import TransientError
from worker.kafka.consumer import GroupConsumer
from worker.pipeline.batch import BatchOutcome
from worker.pipeline.consumer_loop import ConsumerLoop, joined
from worker.retry import RetryPolicy
from worker.settings import Settings

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
C0, C1 = TopicPartition("lag-test", 0), TopicPartition("lag-test", 1)  # their own gauge labels


def consumer_of(
    stop: asyncio.Event, batches: list[dict[TopicPartition, list[FakeRecord]]],
    *, assigned: Iterable[TopicPartition] = (A0, A1, B0), **state: Any,
) -> FakeConsumer:  # fmt: skip
    """A consumer serving `batches` in turn, then setting `stop`, with `assigned` partitions."""
    return FakeConsumer(stop=stop, batches=batches, assigned=list(assigned), **state)


@pytest.fixture
def fast_settings(make_settings: Any) -> Settings:
    """Microsecond retry waits, and each poll processed on its own (BATCH_LINGER_MS=0; the
    linger has its own tests below)."""
    return make_settings(retry_initial_interval_ms=0, retry_backoff_coefficient=1e-6, batch_linger_ms=0)


def make_loop(
    *, consumer: Any, processor: Any, settings: Settings, stop: asyncio.Event,
    report_lag: Callable[[Mapping[str, int]], None] | None = None,
) -> ConsumerLoop:  # fmt: skip
    """The loop as app.py builds it from the settings, over a fake consumer and processor."""
    return ConsumerLoop(
        consumer=GroupConsumer(consumer, offset_reset=settings.kafka_auto_offset_reset),
        processor=processor,
        stop=stop,
        poll_timeout_ms=settings.kafka_poll_timeout_ms,
        max_records=settings.kafka_max_batch_records,
        linger_ms=settings.batch_linger_ms,
        backoff=RetryPolicy.from_settings(settings).backoff_s,
        report_lag=report_lag,
    )


def records(*offsets: int) -> list[FakeRecord]:
    return [FakeRecord(offset=offset) for offset in offsets]


def result(
    commits: dict[TopicPartition, int], blocked: dict[TopicPartition, int] | None = None
) -> BatchOutcome:
    return BatchOutcome(commits=commits, blocked=blocked or {}, stored=0, dead_lettered=0)


async def run(
    settings: Settings,
    batches: list[dict[TopicPartition, list[FakeRecord]]],
    *outcomes: BatchOutcome | Exception,
) -> tuple[FakeConsumer, FakeProcessor]:
    stop = asyncio.Event()
    consumer = consumer_of(stop, batches)
    processor = FakeProcessor(list(outcomes))
    loop = make_loop(consumer=consumer, processor=processor, settings=settings, stop=stop)
    await asyncio.wait_for(loop.run(), timeout=5)
    return consumer, processor


async def test_the_processors_commits_are_committed(fast_settings: Settings) -> None:
    """After a batch is processed, the offsets the processor reports safe are committed."""
    consumer, processor = await run(
        fast_settings, [{A0: records(3, 4), B0: records(9)}], result({A0: 5, B0: 10})
    )
    assert processor.seen == [{A0: records(3, 4), B0: records(9)}]
    assert consumer.commits == [{A0: 5, B0: 10}]
    assert consumer.seeks == []


async def test_committed_offsets_settle_the_processors_dead_letters(fast_settings: Settings) -> None:
    """Once offsets are committed the processor is told, so it can forget their acknowledged dead letters."""
    consumer, processor = await run(fast_settings, [{A0: records(3)}, {A0: records(4)}],
                                    result({A0: 4}), TransientError("dlq down"))  # fmt: skip
    assert consumer.commits == [{A0: 4}]
    assert processor.settled_offsets == [{A0: 4}]


async def test_partitions_no_longer_assigned_are_neither_processed_nor_committed(
    fast_settings: Settings,
) -> None:
    """Records of a partition revoked since the poll are dropped from the batch; the new owner re-reads them."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(1), A1: records(7)}], assigned={A0})
    processor = FakeProcessor([result({A0: 2})])
    loop = make_loop(consumer=consumer, processor=processor, settings=fast_settings, stop=stop)
    await asyncio.wait_for(loop.run(), timeout=5)
    assert processor.seen == [{A0: records(1)}]
    assert consumer.commits == [{A0: 2}]


async def test_blocked_partitions_are_sought_back_and_paused(fast_settings: Settings) -> None:
    """A blocked partition is sought to its first unsafe offset and paused, and logs `partition_paused`."""
    with capture_logs() as logs:
        consumer, _ = await run(
            fast_settings, [{A0: records(20, 21), B0: records(5)}], result({B0: 6}, {A0: 20})
        )
    assert consumer.commits == [{B0: 6}]
    assert consumer.seeks == [(A0, 20)]
    paused = [e for e in logs if e["event"] == "partition_paused"]
    assert [(e["topic"], e["partition"], e["offset"], e["attempt"]) for e in paused] == [("a", 0, 20, 1)]


async def test_a_paused_partition_is_resumed_when_its_backoff_is_over(fast_settings: Settings) -> None:
    """Once the backoff of a paused partition has passed, the next poll resumes it."""
    with capture_logs() as logs:
        consumer, _ = await run(fast_settings, [{A0: records(20)}, {}], result({}, {A0: 20}))
    assert consumer.resumed[0] == A0
    assert A0 not in consumer.paused_set
    assert next(e["partitions"] for e in logs if e["event"] == "partitions_resumed") == ["a:0"]


async def test_a_paused_partition_is_resumed_once(fast_settings: Settings) -> None:
    """A partition whose backoff is over is resumed once, even if the following polls bring nothing."""
    with capture_logs() as logs:
        consumer, _ = await run(fast_settings, [{A0: records(20)}, {}, {}], result({}, {A0: 20}))
    assert consumer.resumed == [A0]
    assert len([e for e in logs if e["event"] == "partitions_resumed"]) == 1


async def test_a_failed_batch_is_sought_back_and_retried(fast_settings: Settings) -> None:
    """If processing raises (e.g. the DLQ is down), every partition is sought back, nothing committed, the batch retried."""
    batch = {A0: records(3, 4), B0: records(9)}
    with capture_logs() as logs:
        consumer, processor = await run(
            fast_settings,
            [batch, batch],
            TransientError("dead-letter publish failed"),
            result({A0: 5, B0: 10}),
        )
    assert consumer.seeks == [(A0, 3), (B0, 9)]
    assert consumer.commits == [{A0: 5, B0: 10}]
    assert len(processor.seen) == 2
    [failed] = [e for e in logs if e["event"] == "batch_failed"]
    assert (failed["records"], failed["exc_info"]) == (3, False)
    assert failed["error"] == "TransientError: dead-letter publish failed"


async def test_an_unexpected_exception_is_logged_with_its_traceback(fast_settings: Settings) -> None:
    """A failure that is not a worker, Kafka or OS error (a bug) is logged with exc_info."""
    with capture_logs() as logs:
        await run(fast_settings, [{A0: records(1)}], ValueError("bug"))
    assert [e["exc_info"] for e in logs if e["event"] == "batch_failed"] == [True]


async def test_a_failed_commit_is_logged_and_not_fatal(fast_settings: Settings) -> None:
    """A commit rejected by the group (a rebalance) logs `commit_failed` and the loop goes on."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(1)}], commit_error=CommitFailedError("rebalanced"))
    loop = make_loop(
        consumer=consumer,
        processor=FakeProcessor([result({A0: 2})]),
        settings=fast_settings,
        stop=stop,
    )
    with capture_logs() as logs:
        await asyncio.wait_for(loop.run(), timeout=5)
    assert [e["partitions"] for e in logs if e["event"] == "commit_failed"] == [["a:0"]]


async def test_revoked_partitions_are_forgotten(fast_settings: Settings) -> None:
    """On revoke the listener waits for the batch in hand and forgets the revoked partitions' pauses."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(20)}])
    loop = make_loop(
        consumer=consumer,
        processor=FakeProcessor([result({}, {A0: 20})]),
        settings=fast_settings,
        stop=stop,
    )
    loop.subscribe(["a"])
    await loop._handle({A0: records(20)})  # type: ignore[dict-item]
    assert A0 in loop._paused
    with capture_logs() as logs:
        await consumer.listener.on_partitions_revoked([A0])
    assert A0 not in loop._paused
    assert loop._processor.forgotten == [A0]  # type: ignore[attr-defined]
    assert [e["partitions"] for e in logs if e["event"] == "partitions_revoked"] == [["a:0"]]


async def test_a_revoke_during_a_retry_backoff_completes_promptly(make_settings: Any) -> None:
    """While a failed batch waits out a long retry backoff, a revoke does not wait for it (rebalance first)."""
    settings = make_settings(retry_initial_interval_ms=60_000, retry_max_interval_ms=60_000)
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(3)}])
    failed = asyncio.Event()

    async def fail(batch: Mapping[TopicPartition, Sequence[Any]]) -> BatchOutcome:
        failed.set()
        raise TransientError("dead-letter publish failed")

    processor = FakeProcessor([])
    processor.process = fail  # type: ignore[method-assign]
    loop = make_loop(consumer=consumer, processor=processor, settings=settings, stop=stop)
    loop.subscribe(["a"])
    running = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(failed.wait(), timeout=5)
        await asyncio.sleep(0.1)  # the loop seeks back and starts its 60 s backoff
        await asyncio.wait_for(consumer.listener.on_partitions_revoked([A0]), timeout=2)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)
    assert consumer.seeks == [(A0, 3)]
    assert consumer.commits == []


@pytest.mark.parametrize("attempts", [1, 2])
async def test_repeated_blocking_grows_the_attempt_count(fast_settings: Settings, attempts: int) -> None:
    """Each time a partition is blocked again its attempt count, hence its backoff, grows."""
    batches = [{A0: records(20)} for _ in range(attempts)]
    with capture_logs() as logs:
        await run(fast_settings, batches, *(result({}, {A0: 20}) for _ in range(attempts)))
    assert [e["attempt"] for e in logs if e["event"] == "partition_paused"] == list(range(1, attempts + 1))


def lag_of(tp: TopicPartition) -> float | None:
    labels = {"topic": tp.topic, "partition": str(tp.partition)}
    return REGISTRY.get_sample_value("persistence_consumer_lag_records", labels)


async def test_commit_lag_is_the_high_watermark_minus_the_committed_offset(fast_settings: Settings) -> None:
    """After each poll and commit, the lag gauge of a partition is its high watermark minus the offset committed."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{C0: records(3, 4)}, {}], assigned={C0, C1}, highwaters={C0: 10, C1: 7},
                            positions={C1: 7})  # fmt: skip
    loop = make_loop(consumer=consumer, processor=FakeProcessor([result({C0: 5})]),
                        settings=fast_settings, stop=stop)  # fmt: skip
    await asyncio.wait_for(loop.run(), timeout=5)
    assert lag_of(C0) == 10 - 5
    assert lag_of(C1) == 0  # fetched, nothing handed out: its position is its committed offset


async def test_a_partition_not_committed_yet_lags_from_where_it_started(fast_settings: Settings) -> None:
    """Before its first commit (a fail-closed route blocked), a partition lags from its first polled record."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{C0: records(3, 4)}], assigned={C0}, highwaters={C0: 12})
    loop = make_loop(consumer=consumer, processor=FakeProcessor([result({}, {C0: 3})]),
                        settings=fast_settings, stop=stop)  # fmt: skip
    await asyncio.wait_for(loop.run(), timeout=5)
    assert lag_of(C0) == 12 - 3


async def test_a_revoked_partition_loses_its_lag_gauge(fast_settings: Settings) -> None:
    """A revoked partition's lag is another member's: its labels leave /metrics."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{C0: records(0)}], assigned={C0}, highwaters={C0: 4})
    loop = make_loop(consumer=consumer, processor=FakeProcessor([result({C0: 1})]),
                        settings=fast_settings, stop=stop)  # fmt: skip
    loop.subscribe(["lag-test"])
    await asyncio.wait_for(loop.run(), timeout=5)
    assert lag_of(C0) == 3
    await consumer.listener.on_partitions_revoked([C0])
    assert lag_of(C0) is None


async def test_each_round_tells_the_write_gate_each_topics_lag_but_paused_partitions_and_backoffs(
    fast_settings: Settings,
) -> None:
    """The priority holds (worker.pipeline.write_gate) need what this loop can drain now: per topic,
    high watermark minus committed over its partitions; a paused partition is left out, and a
    batch that failed counts 0 while the loop backs off (it writes nothing meanwhile)."""
    stop, told = asyncio.Event(), list[dict[str, int]]()
    batches = [{A0: records(3, 4), B0: records(9)}, {A0: records(5)}]
    consumer = consumer_of(stop, batches, assigned={A0, A1, B0}, highwaters={A0: 50, A1: 20, B0: 30},
                            positions={A1: 15})  # fmt: skip
    outcomes: list[BatchOutcome | Exception] = [
        result({A0: 5}, blocked={B0: 9}), TransientError("dead-letter topic down")
    ]
    loop = make_loop(consumer=consumer, processor=FakeProcessor(outcomes), settings=fast_settings,
                     stop=stop, report_lag=lambda lags: told.append(dict(lags)))  # fmt: skip
    loop.subscribe(["a", "b"])
    await asyncio.wait_for(loop.run(), timeout=5)
    assert told[:2] == [
        {"a": (50 - 5) + (20 - 15), "b": 0},  # b:0 is paused
        {"a": 0, "b": 0},  # backing off
    ]


async def test_a_stop_during_a_poll_that_does_not_return_ends_the_loop_promptly(make_settings: Any) -> None:
    """A poll can wait past its timeout (aiokafka waits out a rebalance, which may not end while
    the broker is away); a stop does not wait for it, and nothing is processed or committed."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [])
    never = asyncio.Event()

    async def rebalancing(*_: Any, **__: Any) -> dict[TopicPartition, list[FakeRecord]]:
        await never.wait()
        raise AssertionError("unreachable")

    consumer.getmany = rebalancing  # type: ignore[method-assign]
    processor = FakeProcessor([])
    loop = make_loop(consumer=consumer, processor=processor, settings=make_settings(), stop=stop)
    running = asyncio.ensure_future(loop.run())
    await asyncio.sleep(0.05)
    stop.set()
    done, _ = await asyncio.wait({running}, timeout=2)
    assert running in done and running.exception() is None
    assert processor.seen == [] and consumer.commits == []


# BATCH_LINGER_MS: a short batch waits for more records before it is written.


async def test_without_linger_each_poll_is_written_on_its_own(make_settings: Any) -> None:
    consumer, processor = await run(make_settings(batch_linger_ms=0), [{A0: records(0)}, {A0: records(1)}],
                                    result({A0: 1}), result({A0: 2}))  # fmt: skip
    assert processor.seen == [{A0: records(0)}, {A0: records(1)}]
    assert consumer.commits == [{A0: 1}, {A0: 2}]


async def test_a_short_batch_is_topped_up_with_what_arrived_during_the_linger(make_settings: Any) -> None:
    """One write and one commit carry both polls' records, each partition's in offset order."""
    consumer, processor = await run(
        make_settings(batch_linger_ms=20),
        [{A0: records(0, 1)}, {A0: records(2, 3), B0: records(7)}],
        result({A0: 4, B0: 8}),
    )
    assert processor.seen == [{A0: records(0, 1, 2, 3), B0: records(7)}]
    assert consumer.commits == [{A0: 4, B0: 8}]


async def test_the_top_up_asks_only_for_what_the_batch_lacks(make_settings: Any) -> None:
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(0, 1, 2)}, {A0: records(3)}])
    asked: list[int] = []
    serve = consumer.getmany

    async def recording(*, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[FakeRecord]]:
        asked.append(max_records)
        return await serve(timeout_ms=timeout_ms, max_records=max_records)

    consumer.getmany = recording  # type: ignore[method-assign]
    settings = make_settings(batch_linger_ms=5, kafka_max_batch_records=10)
    loop = make_loop(consumer=consumer, processor=FakeProcessor([result({A0: 4})]), settings=settings, stop=stop)
    await asyncio.wait_for(loop.run(), timeout=5)
    assert asked[:2] == [10, 7]


async def test_a_full_batch_is_written_without_lingering(make_settings: Any) -> None:
    """During a backlog every poll is full: the linger never delays a drain."""
    settings = make_settings(batch_linger_ms=10_000, kafka_max_batch_records=2)
    consumer, processor = await asyncio.wait_for(
        run(settings, [{A0: records(0, 1)}, {A0: records(2, 3)}], result({A0: 2}), result({A0: 4})), timeout=2
    )
    assert processor.seen == [{A0: records(0, 1)}, {A0: records(2, 3)}]
    assert consumer.commits == [{A0: 2}, {A0: 4}]


async def test_a_stop_during_the_linger_writes_the_batch_in_hand_at_once(make_settings: Any) -> None:
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(0)}, {A0: records(1)}])
    processor = FakeProcessor([result({A0: 1})])
    loop = make_loop(consumer=consumer, processor=processor, settings=make_settings(batch_linger_ms=10_000), stop=stop)
    running = asyncio.ensure_future(loop.run())
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=2)
    assert processor.seen == [{A0: records(0)}]
    assert consumer.commits == [{A0: 1}]


async def test_a_batch_with_a_record_of_an_urgent_topic_is_written_without_lingering(make_settings: Any) -> None:
    """Incidents (first in ROUTE_PRIORITY) never wait for a linger, even in a loop shared with other routes."""
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{A0: records(0), B0: records(4)}])
    processor = FakeProcessor([result({A0: 1, B0: 5})])
    loop = ConsumerLoop(consumer=GroupConsumer(consumer), processor=processor, stop=stop, poll_timeout_ms=100,
                        max_records=1000, backoff=lambda _: 0.0, linger_ms=10_000, urgent_topics={"b"})  # fmt: skip
    await asyncio.wait_for(loop.run(), timeout=2)  # a linger would wait 10 s
    assert processor.seen == [{A0: records(0), B0: records(4)}]


async def test_a_partition_revoked_during_the_linger_leaves_no_lag_behind(make_settings: Any) -> None:
    """Its records are dropped before the lag gauge sees them: no series is left for a
    partition that is another member's now."""
    kept, revoked = TopicPartition("linger-revoke", 0), TopicPartition("linger-revoke", 1)
    stop = asyncio.Event()
    consumer = consumer_of(stop, [{kept: records(0), revoked: records(0)}], assigned={kept, revoked})
    processor = FakeProcessor([result({kept: 1})])
    loop = make_loop(consumer=consumer, processor=processor, settings=make_settings(batch_linger_ms=100), stop=stop)
    running = asyncio.ensure_future(loop.run())
    await asyncio.sleep(0.03)
    consumer.assigned = [kept]  # the group took it away during the linger
    await asyncio.wait_for(running, timeout=2)
    assert processor.seen == [{kept: records(0)}]
    gauge = {"topic": "linger-revoke", "partition": "1"}
    assert REGISTRY.get_sample_value("persistence_consumer_lag_records", gauge) is None


def test_a_partition_sought_back_during_the_linger_is_read_again_not_skipped() -> None:
    """A rebalance in the linger can hand a partition back at its committed offset: the second
    poll's records then replace the first's for it (they are read again, never merged out of order)."""
    assert joined({A0: records(5, 6), B0: records(1)}, {A0: records(3, 4, 5), B0: records(2)}) == {
        A0: records(3, 4, 5),
        B0: records(1, 2),
    }


PARTITIONS = st.sampled_from([A0, A1, B0])
polls = st.dictionaries(
    PARTITIONS,
    st.lists(st.integers(0, 50), min_size=1, max_size=8, unique=True).map(lambda o: records(*sorted(o))),
    max_size=3,
)


@given(first=polls, then=polls)
def test_a_topped_up_batch_keeps_each_partition_in_offset_order_and_all_of_the_second_poll(
    first: dict[TopicPartition, list[FakeRecord]], then: dict[TopicPartition, list[FakeRecord]]
) -> None:
    """Whatever two polls return (offsets with gaps: transaction markers, compaction), each
    partition's records stay strictly increasing, end with the second poll's, and keep the first
    poll's unless the partition was sought back."""
    merged = joined(first, then)
    assert set(merged) == set(first) | set(then)
    for tp, got in merged.items():
        offsets = [record.offset for record in got]
        assert offsets == sorted(set(offsets))
        if tp in then:
            assert got[len(got) - len(then[tp]):] == then[tp]
        if tp in first and (tp not in then or then[tp][0].offset > first[tp][-1].offset):
            assert got[: len(first[tp])] == first[tp]
