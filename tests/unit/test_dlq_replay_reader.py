"""`dlq replay`: bounded reading of dead-letter partitions, an honest exit code, the shared consumer factory."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from tests.support.kafka import FakeConsumer, partitions
from worker.commands.dlq import dlq_replay_command, exit_code
from worker.commands.exits import ExitCode
from worker.commands.output import SilentReporter
from worker.dead_letters import reader as dead_letter_reader
from worker.dead_letters import replay as dead_letter_replay
from worker.dead_letters.reader import DeadLetterReader
from worker.dead_letters.replay import DlqReplayOptions, Summary, replay_records
from worker.dead_letters.targets import BatchFailed
from worker.settings import Settings

TOPIC = "in.dlq"


async def replayed(reader: DeadLetterReader, target: Any, options: DlqReplayOptions) -> Summary:
    """A run of `dlq replay` on `reader` (opened), up to the ends it measures, without a stop request."""
    await reader.measure()
    return await replay_records(reader, target, options, Settings(), progress=SilentReporter(), stop=asyncio.Event())


async def test_measuring_the_ends_holds_no_record_and_every_record_is_read_once_in_order() -> None:
    """Records fetched while learning the ends are not kept: their partitions go back to the start and are read again."""
    consumer = FakeConsumer(logs=partitions(TOPIC, [30, 7, 0]))
    reader = DeadLetterReader(consumer, max_records=10)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    assert await reader.measure() == 37
    assert consumer.positions == dict.fromkeys(consumer.logs, 0), "fetched records were kept, not sought back"
    assert not consumer.paused_set
    read: dict[int, list[int]] = {}
    async for chunk in reader.batches():
        assert sum(map(len, chunk.values())) <= 10
        for tp, records in chunk.items():
            read.setdefault(tp.partition, []).extend(record.offset for record in records)
    assert read == {0: list(range(30)), 1: list(range(7))}


async def test_a_run_that_stops_before_the_end_offsets_exits_incomplete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the records up to the end it measured never arrive, dlq replay gives up with exit 1, not 0."""
    monkeypatch.setattr(dead_letter_reader, "IDLE_POLLS_BEFORE_GIVING_UP", 2)
    consumer = FakeConsumer(logs=partitions(TOPIC, [10]), served=4)
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    class Sent:
        async def replay(self, records: list[Any]) -> tuple[int, Any]:
            return len(records), Counter()

    summary = await replayed(reader, Sent(), DlqReplayOptions())

    assert summary.error and "stopped before the end offsets" in summary.error
    assert exit_code(summary, DlqReplayOptions()) == ExitCode.PROBLEM
    assert reader.shortfall() == {f"{TOPIC}:0": 6}


async def test_a_dry_run_that_stops_before_the_end_exits_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run that could not count every record up to the end says so with exit 1."""
    monkeypatch.setattr(dead_letter_reader, "IDLE_POLLS_BEFORE_GIVING_UP", 2)
    consumer = FakeConsumer(logs=partitions(TOPIC, [10]), served=4)
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])
    dry_run = DlqReplayOptions(dry_run=True)

    summary = await replayed(reader, None, dry_run)

    assert exit_code(summary, dry_run) == ExitCode.PROBLEM
    assert consumer.commits == []


async def test_the_consumer_comes_from_the_workers_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """dlq replay builds its consumer with worker.kafka.clients.create_consumer (same fetch bounds), under its own group."""
    calls: list[tuple[Settings, dict[str, Any]]] = []

    class Unreachable:
        async def start(self) -> None:
            raise KafkaConnectionError("no broker")

        async def stop(self) -> None:
            return None

    def factory(settings: Settings, **kwargs: Any) -> Unreachable:
        calls.append((settings, kwargs))
        return Unreachable()

    monkeypatch.setattr(dead_letter_replay, "create_consumer", factory)
    settings = Settings(kafka_consumer_group="g")

    assert await dlq_replay_command(settings, DlqReplayOptions()) == ExitCode.UNREACHABLE
    assert calls == [(settings, {"group_id": "g-dlq-replay", "auto_offset_reset": "earliest"})]


async def test_a_server_refusing_us_mid_run_exits_3_and_commits_nothing() -> None:
    """A batch refused by a server (e.g. not authorized) ends the run with the documented exit 3, uncommitted."""
    consumer = FakeConsumer(logs=partitions(TOPIC, [5]))
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    class Refusing:
        async def replay(self, records: list[Any]) -> tuple[int, Any]:
            raise BatchFailed("MongoDB: not authorized", refused=True)

    summary = await replayed(reader, Refusing(), DlqReplayOptions())

    assert exit_code(summary, DlqReplayOptions()) == ExitCode.UNREACHABLE
    assert consumer.commits == []
