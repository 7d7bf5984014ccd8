"""Specification of the ops metrics (issue 13): build info, no `_created` twins, commit lag and time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY, generate_latest

import worker.app  # noqa: F401  (every module that defines a metric)
from tests.support.kafka import FakeConsumer, FakeRecord
from worker.kafka import lag as lag_module
from worker.kafka.lag import CommitLag
from worker.ops.metrics import RECORDS_STORED

TP = TopicPartition("ops-metrics.results", 4)
LABELS = {"topic": TP.topic, "partition": "4"}


def watermarked(highwater: int) -> FakeConsumer:
    """A consumer assigned TP alone, at offset 0, whose high watermark is `highwater`."""
    return FakeConsumer(assigned=[TP], highwaters={TP: highwater})


def lag() -> float | None:
    return REGISTRY.get_sample_value("persistence_consumer_lag_records", LABELS)


def test_a_batch_in_hand_shows_as_lag_before_it_is_processed() -> None:
    """Polling 10 uncommitted records sets the lag gauge to at least 10 before any write or commit."""
    commit_lag = CommitLag()
    commit_lag.committed({TP: 100})
    commit_lag.saw({TP: [FakeRecord(TP.topic, TP.partition, offset) for offset in range(100, 110)]})
    assert lag() == 10


async def test_the_known_high_watermark_is_kept_when_a_batch_is_seen() -> None:
    """A batch shorter than the backlog reads the last known high watermark, not only the batch's end."""
    commit_lag = CommitLag()
    commit_lag.committed({TP: 0})
    await commit_lag.publish(watermarked(500))
    commit_lag.saw({TP: [FakeRecord(TP.topic, TP.partition, offset) for offset in range(0, 10)]})
    assert lag() == 500


async def test_a_position_look_up_that_never_answers_does_not_hold_the_loop(monkeypatch: Any) -> None:
    """aiokafka's position() can wait for a coordinator that is away; publish gives up on it
    after POSITION_TIMEOUT_S, so the consumer loop polls again (and a stop is seen)."""
    monkeypatch.setattr(lag_module, "POSITION_TIMEOUT_S", 0.05)

    consumer = watermarked(500)

    async def unanswered(partition: TopicPartition) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    consumer.position = unanswered  # type: ignore[method-assign]
    await asyncio.wait_for(CommitLag().publish(consumer), timeout=2)


class SlowLookUp(FakeConsumer):
    """A consumer whose position look-up answers only once `answer` is set."""

    def __init__(self, highwater: int) -> None:
        super().__init__(assigned=[TP], highwaters={TP: highwater})
        self.asked, self.answer = asyncio.Event(), asyncio.Event()

    async def position(self, tp: TopicPartition) -> int:
        self.asked.set()
        await self.answer.wait()
        return await super().position(tp)


async def test_a_revoke_during_a_position_look_up_leaves_the_revoked_partition_without_lag() -> None:
    """A revoke that forgets a partition while publish() waits for its position wins: publish
    neither sets its gauge again nor counts it in the topic's lag."""
    commit_lag, consumer = CommitLag(), SlowLookUp(highwater=500)
    publishing = asyncio.ensure_future(commit_lag.publish(consumer))
    await consumer.asked.wait()
    commit_lag.forget([TP])  # the revoke's listener runs while publish awaits
    consumer.answer.set()
    await publishing
    assert lag() is None
    assert commit_lag.records(TP.topic) == 0


def test_a_commit_records_its_time_per_partition_and_a_revoke_removes_it() -> None:
    """committed() sets the partition's last-commit time to now; forget() removes the series."""
    commit_lag = CommitLag()
    before = time.time()
    commit_lag.committed({TP: 42})
    stamp = REGISTRY.get_sample_value("persistence_consumer_last_commit_timestamp_seconds", LABELS)
    assert stamp is not None and before <= stamp <= time.time()
    commit_lag.forget([TP])
    assert REGISTRY.get_sample_value("persistence_consumer_last_commit_timestamp_seconds", LABELS) is None
    assert lag() is None


def test_counters_have_no_created_twin() -> None:
    """/metrics carries no `_created` series for the worker's counters."""
    RECORDS_STORED.labels(route="ops-metrics").inc()
    text = generate_latest().decode()
    assert 'persistence_records_stored_total{route="ops-metrics"}' in text
    assert "_created" not in text


def test_build_info_names_the_worker_python_and_client_libraries() -> None:
    """persistence_build_info is 1 with version, python, aiokafka and pymongo labels."""
    (sample,) = [s for f in REGISTRY.collect() if f.name == "persistence_build_info" for s in f.samples]
    assert sample.value == 1
    assert set(sample.labels) == {"version", "python", "aiokafka", "pymongo"}
    assert sample.labels["aiokafka"].startswith("0.") and sample.labels["pymongo"].startswith("4.")


def test_readiness_is_absent_until_tracked_then_read_at_each_scrape() -> None:
    """persistence_ready is not exported before track_readiness; then it follows the callable."""
    from worker.ops.metrics import track_readiness

    ready = {"now": False}
    if REGISTRY.get_sample_value("persistence_ready") is None:
        assert "persistence_ready" not in generate_latest().decode()
    track_readiness(lambda: ready["now"])
    assert REGISTRY.get_sample_value("persistence_ready") == 0
    ready["now"] = True
    assert REGISTRY.get_sample_value("persistence_ready") == 1
    track_readiness(lambda: False)  # a second call rewires, never registers twice
    assert REGISTRY.get_sample_value("persistence_ready") == 0
