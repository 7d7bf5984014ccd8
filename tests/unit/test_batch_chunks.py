"""Specification of chunked writes: a route's large batch goes out in chunks, one at a time,
and reads (logs, outcome, failures) exactly as one bulk write would."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from tests.support.events import EventFactory
from tests.support.pipeline import INC, Document, FakeWriter, Pipeline, good_record, make_pipeline
from tests.support.routes import TOPICS
from worker.errors import TransientError
from worker.mongo.writers import WriteOutcome
from worker.pipeline.batch import WRITE_CHUNK
from worker.settings import RouteName, Settings

BIG = 2 * WRITE_CHUNK + 17


@dataclass
class OneAtATimeWriter(FakeWriter):
    """A writer that notices two bulk writes in flight at once, and skips the first document of each."""

    in_flight: int = 0
    most_in_flight: int = 0

    async def write(self, documents: Sequence[Document]) -> WriteOutcome:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        self.calls.append(list(documents))
        return WriteOutcome(stored=len(documents) - 1, skipped=frozenset({0}))


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory(seed=5)


async def test_a_large_batch_is_written_in_chunks_one_after_the_other(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """More records than WRITE_CHUNK: several bulk writes, never two at once, every record written once."""
    pipeline = make_pipeline(fast_settings)
    writer = OneAtATimeWriter(collection="incidents")
    _with_writer(pipeline, writer)
    result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(BIG)))
    assert [len(call) for call in writer.calls] == [WRITE_CHUNK, WRITE_CHUNK, 17]
    assert writer.most_in_flight == 1
    assert [d["_id"] for d in writer.documents] == [f"inc-{n + 1}" for n in range(BIG)]
    assert result.commits == {INC: BIG}
    assert result.stored == BIG


async def test_chunks_log_one_saved_line_per_partition_with_merged_counts(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """The saved line covers the whole batch of the partition; each chunk's skipped document is counted."""
    pipeline = make_pipeline(fast_settings)
    _with_writer(pipeline, OneAtATimeWriter(collection="incidents"))
    with capture_logs() as logs:
        await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(BIG)))
    [saved] = [e for e in logs if e["event"] == "incident_saved"]
    assert (saved["offset"], saved["last_offset"]) == (0, BIG - 1)
    assert (saved["stored"], saved["skipped"], saved["refused"]) == (BIG - 3, 3, 0)


async def test_when_the_server_is_down_later_chunks_fail_with_the_first_without_retrying_again(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """A transient failure after the retries fails the whole route's batch at once: dead-lettered (fail-open)."""
    pipeline = make_pipeline(fast_settings)
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.always_fail = TransientError("down")
    with capture_logs() as logs:
        result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(BIG)))
    assert len(writer.calls) == fast_settings.retry_max_attempts
    assert sorted(letter.record.offset for letter in pipeline.dead_letters.letters) == list(range(BIG))
    assert {letter.error_type for letter in pipeline.dead_letters.letters} == {"persist_failed"}
    assert result.commits == {INC: BIG}
    assert [e["records"] for e in logs if e["event"] == "incidents_persist_failed"] == [BIG]


async def test_a_fail_closed_route_down_blocks_the_partition_of_every_chunk(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """Fail-closed: nothing of the partition is committed or dead-lettered, whichever chunk failed."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.INCIDENTS}))
    pipeline.writers[RouteName.INCIDENTS].always_fail = TransientError("down")
    result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(BIG)))
    assert result.commits == {}
    assert result.blocked == {INC: 0}
    assert pipeline.dead_letters.letters == []


def _with_writer(pipeline: Pipeline, writer: FakeWriter) -> None:
    topic = TOPICS[RouteName.INCIDENTS]
    pipeline.routes[topic] = dataclasses.replace(pipeline.routes[topic], writer=writer)
