"""worker.kafka.undecodable.poll: an undecodable batch pauses its partition; other errors pass through."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedCodecError
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.support.kafka import FakeConsumer
from worker.kafka.undecodable import is_decode_error, poll

GOOD, BAD = TopicPartition("in", 0), TopicPartition("in", 1)
CODEC_ERROR = UnsupportedCodecError("Libraries for snappy compression codec not found")


def consumer_with(
    error: Exception, *, ends: dict[TopicPartition, int] | None = None, bad: dict[TopicPartition, set[int]] | None = None,
    **state: Any,
) -> FakeConsumer:  # fmt: skip
    """Partitions of `ends[tp]` records (GOOD and BAD, 4 each), assigned in that order; an offset in
    `bad[tp]` (BAD's 2) cannot be decoded: a getmany that drains it raises `error`."""
    return FakeConsumer(logs=ends or {GOOD: 4, BAD: 4}, bad={BAD: {2}} if bad is None else bad, error=error, **state)


def offsets(batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[int]]:
    return {tp: [record.offset for record in records] for tp, records in batch.items()}


def test_codec_and_corruption_errors_are_decode_errors_and_broker_errors_are_not() -> None:
    """UnsupportedCodecError and a decompressor's own error count as decoding; a connection error does not."""
    assert is_decode_error(UnsupportedCodecError("snappy"))
    assert is_decode_error(ValueError("bad lz4 frame"))
    assert not is_decode_error(KafkaConnectionError("down"))


async def test_records_before_the_bad_batch_are_handed_out_and_its_partition_paused_at_it() -> None:
    """The good partition's records and the bad one's up to the batch come back; the bad partition is paused at offset 2."""
    consumer = consumer_with(CODEC_ERROR)
    before = REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": "in"}) or 0.0

    batch = await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]

    assert offsets(batch) == {GOOD: [0, 1, 2, 3], BAD: [0, 1]}
    assert consumer.paused_set == {BAD}
    assert consumer.positions[BAD] == 2
    assert (GOOD, 0) in consumer.seeks, "what the failed poll drained is read again"
    assert REGISTRY.get_sample_value("persistence_undecodable_batches_total", {"topic": "in"}) == before + 1


async def test_a_healthy_backlog_read_first_cannot_use_up_the_budget_before_the_bad_partition() -> None:
    """GOOD's backlog outlasts the budget and is read first: BAD is still paused at its batch and
    the budget is filled with BAD's records first, GOOD's rest left for the next poll."""
    consumer = consumer_with(CODEC_ERROR, ends={GOOD: 10, BAD: 4}, drained_in=[BAD, GOOD])

    batch = await poll(consumer, timeout_ms=10, max_records=5)  # type: ignore[arg-type]

    assert offsets(batch) == {BAD: [0, 1], GOOD: [0, 1, 2]}
    assert consumer.paused_set == {BAD} and consumer.positions[BAD] == 2
    assert consumer.positions[GOOD] == 3, "what did not fit is read by the next poll, not skipped"


@pytest.mark.parametrize("revoking", [GOOD, BAD], ids=["good", "bad"])
@pytest.mark.parametrize("revoke_at", range(1, 16))
async def test_a_partition_revoked_at_any_step_of_the_poll_is_left_out_instead_of_raising(
    revoking: TopicPartition, revoke_at: int
) -> None:
    """A rebalance that takes a partition away during any awaited call of the poll (IllegalStateError
    from then on) does not fail it: the other partition is handed out as without the rebalance,
    the revoked one's records, if any, in order from 0, and nothing is paused but BAD at 2."""
    consumer = consumer_with(CODEC_ERROR, revoking=revoking, revoke_at=revoke_at)
    expected = {GOOD: [0, 1, 2, 3], BAD: [0, 1]}
    kept = BAD if revoking == GOOD else GOOD

    batch = offsets(await poll(consumer, timeout_ms=10, max_records=100))  # type: ignore[arg-type]

    assert batch[kept] == expected[kept]
    assert batch.get(revoking, []) == expected[revoking][: len(batch.get(revoking, []))]
    assert consumer.paused_set <= {BAD} and all(consumer.positions[tp] == 2 for tp in consumer.paused_set)
    assert kept == GOOD or consumer.paused() == {BAD}


async def test_an_error_no_partition_raises_alone_is_raised() -> None:
    """When every partition reads fine on its own the original error is raised, not swallowed."""
    consumer = consumer_with(ValueError("not about decoding"), bad={}, whole_batch_fails=True)
    with pytest.raises(ValueError, match="not about decoding"):
        await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]


async def test_a_broker_error_passes_through_untouched() -> None:
    """A KafkaError other than decoding leaves poll as it came, with nothing sought or paused."""
    consumer = consumer_with(KafkaConnectionError("down"))
    with pytest.raises(KafkaConnectionError):
        await poll(consumer, timeout_ms=10, max_records=100)  # type: ignore[arg-type]
    assert consumer.seeks == [] and consumer.paused_set == set()


@dataclass(frozen=True)
class Scenario:
    ends: dict[TopicPartition, int]  # in assignment order
    bad: dict[TopicPartition, set[int]]
    drained_in: list[TopicPartition]
    max_records: int

    def healthy_up_to(self, tp: TopicPartition) -> int:
        return min(self.bad[tp], default=self.ends[tp])


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    partitions = [TopicPartition("in", index) for index in range(draw(st.integers(1, 4)))]
    backlog = {tp: draw(st.integers(0, 12)) for tp in partitions}
    bad = {tp: draw(st.sets(st.integers(0, end - 1), max_size=3) if end else st.just(set[int]()))
           for tp, end in backlog.items()}  # fmt: skip
    order = draw(st.permutations(partitions))
    return Scenario(
        ends={tp: backlog[tp] for tp in order},
        bad=bad,
        drained_in=list(draw(st.permutations(partitions))),
        max_records=draw(st.integers(1, 8)),
    )


async def poll_until_drained(consumer: FakeConsumer, scenario: Scenario) -> dict[TopicPartition, list[int]]:
    """Polls as the consumer loop does, more times than there are records and partitions; each
    partition's offsets in the order handed out."""
    handed_out: dict[TopicPartition, list[int]] = {tp: [] for tp in scenario.ends}
    for _ in range(sum(scenario.ends.values()) + len(scenario.ends) + 1):
        batch = await poll(consumer, timeout_ms=0, max_records=scenario.max_records)  # type: ignore[arg-type]
        assert sum(map(len, batch.values())) <= scenario.max_records
        for tp, records in offsets(batch).items():
            handed_out[tp] += records
    return handed_out


@given(scenario=scenarios())
@settings(max_examples=300, deadline=None)
def test_any_order_budget_and_bad_offsets_hand_out_every_healthy_record_once_and_pause_at_the_first_bad(
    scenario: Scenario,
) -> None:
    """Whatever the assignment and drain orders, budget, backlogs and undecodable offsets, successive
    polls never raise, hand out each partition's records before its first bad offset once each and
    in order, and leave each partition with a bad offset paused there."""
    consumer = consumer_with(CODEC_ERROR, ends=dict(scenario.ends), bad=scenario.bad, drained_in=scenario.drained_in)

    handed_out = asyncio.run(poll_until_drained(consumer, scenario))

    assert handed_out == {tp: list(range(scenario.healthy_up_to(tp))) for tp in scenario.ends}
    assert consumer.paused_set == {tp for tp, bad in scenario.bad.items() if bad}
    assert all(consumer.positions[tp] == scenario.healthy_up_to(tp) for tp in consumer.paused_set)
