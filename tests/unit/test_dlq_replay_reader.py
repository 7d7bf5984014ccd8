"""`dlq replay`: bounded reading of dead-letter partitions, an honest exit code, the shared consumer factory."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from tests.support.kafka import FakeConsumer, partitions
from worker.commands import dlq_reader, dlq_replay
from worker.commands.dlq_reader import DeadLetterReader
from worker.commands.dlq_replay import DlqReplayOptions, dlq_replay_command
from worker.commands.exit_codes import ExitCode
from worker.settings import Settings

TOPIC = "in.dlq"


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
    monkeypatch.setattr(dlq_reader, "IDLE_POLLS_BEFORE_GIVING_UP", 2)
    consumer = FakeConsumer(logs=partitions(TOPIC, [10]), served=4)
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    class Sent:
        async def replay(self, records: list[Any]) -> tuple[int, Any]:
            from collections import Counter

            return len(records), Counter()

    code = await dlq_replay._replay(consumer, reader, Sent(), DlqReplayOptions(), Settings())  # type: ignore[arg-type]

    assert code == ExitCode.PROBLEM
    assert reader.shortfall() == {f"{TOPIC}:0": 6}


async def test_a_dry_run_that_stops_before_the_end_exits_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run that could not count every record up to the end says so with exit 1."""
    monkeypatch.setattr(dlq_reader, "IDLE_POLLS_BEFORE_GIVING_UP", 2)
    consumer = FakeConsumer(logs=partitions(TOPIC, [10]), served=4)
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    code = await dlq_replay._replay(consumer, reader, None, DlqReplayOptions(dry_run=True), Settings())  # type: ignore[arg-type]

    assert code == ExitCode.PROBLEM


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

    monkeypatch.setattr(dlq_replay, "create_consumer", factory)
    settings = Settings(kafka_consumer_group="g")

    assert await dlq_replay_command(settings, DlqReplayOptions()) == ExitCode.UNREACHABLE
    assert calls == [(settings, {"group_id": "g-dlq-replay", "auto_offset_reset": "earliest"})]


async def test_a_server_refusing_us_mid_run_exits_3_and_commits_nothing() -> None:
    """A batch refused by a server (e.g. not authorized) ends the run with the documented exit 3, uncommitted."""
    from worker.commands.dlq_targets import BatchFailed

    consumer = FakeConsumer(logs=partitions(TOPIC, [5]))
    reader = DeadLetterReader(consumer, max_records=100)  # type: ignore[arg-type]
    await reader.open([TOPIC])

    class Refusing:
        async def replay(self, records: list[Any]) -> tuple[int, Any]:
            raise BatchFailed("MongoDB: not authorized", refused=True)

    code = await dlq_replay._replay(consumer, reader, Refusing(), DlqReplayOptions(), Settings())  # type: ignore[arg-type]

    assert code == ExitCode.UNREACHABLE
    assert consumer.commits == []
