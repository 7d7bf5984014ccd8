"""`persistence-worker dlq replay` on real servers: after a MongoDB outage, still-dead records, dry run, resuming."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.integration.harness import (
    committed_offsets,
    prepare_topics,
    publish,
    read_topic,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from worker.commands.dlq import dlq_replay_command
from worker.dead_letters.letters import DeadLetter
from worker.dead_letters.replay import DlqReplayOptions
from worker.dead_letters.targets import SourceRecord
from worker.settings import RouteName, Settings


def incidents(count: int, seed: int) -> list[dict[str, Any]]:
    factory = EventFactory(seed=seed)
    return [{**factory.incident(), "event_id": f"inc-{seed}-{index}"} for index in range(count)]


async def stored_incidents(db: Any) -> int:
    return int(await db.incidents.count_documents({}))


async def test_after_a_mongodb_outage_dlq_replay_stores_every_record_exactly_once(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Incidents dead-lettered while MongoDB was down come back by --direct and by re-publishing, twice over, and are stored once each."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri)
    await prepare_topics(create_topics, settings)
    topic = settings.topic_for(RouteName.INCIDENTS)
    before, during = incidents(10, seed=61), incidents(25, seed=62)
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri, tz_aware=True)
    db = client[settings.mongodb_database]
    try:
        async with running_worker(settings):
            await publish(kafka_bootstrap, topic, [orjson.dumps(e) for e in before])
            await wait_until(lambda: _count_is(db, 10), within=60, what="incidents before the outage")
            controllable_mongo.stop()
            await publish(kafka_bootstrap, topic, [orjson.dumps(e) for e in during])
            await wait_until(
                lambda: _dead_count(settings, 25), within=60, what="the outage's records dead-lettered"
            )
            controllable_mongo.start()
            direct = DlqReplayOptions(routes=(RouteName.INCIDENTS,), error_types=frozenset({"persist_failed"}),
                                      direct=True)  # fmt: skip
            assert await dlq_replay_command(settings, direct) == 0
            assert await stored_incidents(db) == 35
            assert "replayed=25 still_dead=0" in capsys.readouterr().out
            again = DlqReplayOptions(
                routes=(RouteName.INCIDENTS,), from_offset=0, group=f"{unique_name}-again"
            )
            assert await dlq_replay_command(settings, again) == 0
            assert "replayed=25" in capsys.readouterr().out
            await wait_until(
                lambda: _committed(settings, topic, 10 + 25 + 25), within=60, what="the worker to re-read"
            )
        assert await stored_incidents(db) == 35
        ids = {doc["_id"] async for doc in db.incidents.find({}, {"_id": 1})}
        assert ids == {e["event_id"] for e in before + during}
        replayed = [r for r in await read_topic(kafka_bootstrap, topic) if _has(r, "x-replayed-from")]
        assert len(replayed) == 25
        assert not [
            r
            for r in replayed
            if any(k.startswith(("x-error-", "x-source-", "x-failed-at")) for k, _ in r.headers)
        ]
    finally:
        await client.close()


async def _count_is(db: Any, expected: int) -> bool:
    return await stored_incidents(db) == expected


async def _dead_count(settings: Settings, expected: int) -> bool:
    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS)),
        idle_ms=500,
    )
    return len(dead) >= expected


async def _committed(settings: Settings, topic: str, total: int) -> bool:
    return sum(o or 0 for o in (await committed_offsets(settings, topic, 3)).values()) >= total


def _has(record: Any, header: str) -> bool:
    return any(key == header for key, _ in record.headers)


@pytest.fixture
async def dead_lettered(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any
) -> tuple[Settings, list[dict[str, Any]]]:
    """Settings, and an incidents dead-letter topic holding 6 persist_failed good incidents and 2 validation failures."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    good = incidents(6, seed=63)
    letters = [_letter(settings, orjson.dumps(event), "persist_failed", "retries_exhausted", i)
               for i, event in enumerate(good)]  # fmt: skip
    letters.insert(2, _letter(settings, b"{oops", "validation", "not_json", 90))
    letters.append(
        _letter(settings, orjson.dumps({**good[0], "severity": "meh"}), "validation", "schema_violation", 91)
    )
    dlq = settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS))
    for value, headers in letters:
        await publish(kafka_bootstrap, dlq, [value], headers=headers)
    return settings, good


def _letter(
    settings: Settings, value: bytes, error_type: str, reason: str, offset: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    topic = settings.topic_for(RouteName.INCIDENTS)
    record = SourceRecord(
        topic=topic, partition=0, offset=offset, key=b"k", value=value, headers=[("trace", b"t1")]
    )
    return value, DeadLetter(record, settings.dlq_topic(topic), error_type, reason, "detail").headers()


async def test_direct_replay_counts_records_that_fail_again_and_does_not_loop_them(
    dead_lettered: tuple[Settings, list[dict[str, Any]]], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--direct stores the good records, counts the ones that fail validation again as still dead (exit 1), and leaves them where they are."""
    settings, good = dead_lettered
    assert await dlq_replay_command(settings, DlqReplayOptions(direct=True)) == 1
    out = capsys.readouterr().out
    assert "replayed=6 still_dead=2" in out
    assert "validation:not_json" in out and "validation:schema_violation" in out
    assert {doc["_id"] async for doc in mongo_db.incidents.find()} == {e["event_id"] for e in good}
    dlq = settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS))
    assert len(await read_topic(settings.kafka_bootstrap_servers, dlq, idle_ms=800)) == 8, (
        "not dead-lettered again"
    )


async def test_a_second_run_continues_where_the_first_stopped(
    dead_lettered: tuple[Settings, list[dict[str, Any]]], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's consumer group keeps its position: a second run finds nothing new, and new dead letters only are read next."""
    settings, _ = dead_lettered
    chosen = DlqReplayOptions(error_types=frozenset({"persist_failed"}), direct=True)
    assert await dlq_replay_command(settings, chosen) == 0
    assert "read=8 chosen=6 replayed=6 still_dead=0 not_chosen=2" in capsys.readouterr().out
    assert await dlq_replay_command(settings, chosen) == 0
    assert "read=0" in capsys.readouterr().out
    late = incidents(1, seed=64)[0]
    value, headers = _letter(settings, orjson.dumps(late), "persist_failed", "retries_exhausted", 99)
    await publish(settings.kafka_bootstrap_servers, settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS)),
                  [value], headers=headers)  # fmt: skip
    assert await dlq_replay_command(settings, chosen) == 0
    assert "read=1 chosen=1 replayed=1" in capsys.readouterr().out
    assert await mongo_db.incidents.count_documents({}) == 7


async def test_a_dry_run_counts_per_error_type_and_changes_nothing(
    dead_lettered: tuple[Settings, list[dict[str, Any]]], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints counts per error type and a sample, writes nothing, publishes nothing and commits nothing."""
    settings, _ = dead_lettered
    assert await dlq_replay_command(settings, DlqReplayOptions(dry_run=True)) == 0
    out = capsys.readouterr().out
    assert "8 dead-lettered record(s) to read, 8 chosen" in out
    assert "persist_failed" in out and "validation" in out and "not_json" in out
    assert re.search(r"persist_failed\W+6\b", out) and re.search(r"validation\W+2\b", out)
    assert await mongo_db.incidents.count_documents({}) == 0
    assert (
        await read_topic(
            settings.kafka_bootstrap_servers, settings.topic_for(RouteName.INCIDENTS), idle_ms=800
        )
        == []
    )
    assert await dlq_replay_command(settings, DlqReplayOptions(direct=True)) == 1
    assert "read=8" in capsys.readouterr().out, "the dry run committed nothing"


async def test_from_time_starts_at_the_first_record_at_or_after_it(
    dead_lettered: tuple[Settings, list[dict[str, Any]]], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-time in the future reads nothing; --from-time an hour ago reads everything."""
    settings, _ = dead_lettered
    later = DlqReplayOptions(
        from_time=datetime.now(UTC) + timedelta(hours=1),
        direct=True,
        group=f"{settings.kafka_consumer_group}-later",
    )
    assert await dlq_replay_command(settings, later) == 0
    assert "read=0" in capsys.readouterr().out
    earlier = DlqReplayOptions(from_time=datetime.now(UTC) - timedelta(hours=1), direct=True, group=f"{settings.kafka_consumer_group}-earlier",
                               error_types=frozenset({"persist_failed"}))  # fmt: skip
    assert await dlq_replay_command(settings, earlier) == 0
    assert "replayed=6" in capsys.readouterr().out


async def test_reads_up_to_the_true_end_of_partitions_written_in_batches(
    unique_name: str,
    kafka_bootstrap: str,
    mongo_uri: str,
    create_topics: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records produced in batches are all read: the end is the high watermark, whatever ListOffsets answers."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings)
    value, headers = _letter(settings, orjson.dumps(incidents(1, seed=65)[0]), "persist_failed", "x", 1)
    dlq = settings.dlq_topic(settings.topic_for(RouteName.INCIDENTS))
    await publish(kafka_bootstrap, dlq, [value] * 50, headers=headers)
    assert await dlq_replay_command(settings, DlqReplayOptions(dry_run=True)) == 0
    assert "50 dead-lettered record(s) to read, 50 chosen" in capsys.readouterr().out
