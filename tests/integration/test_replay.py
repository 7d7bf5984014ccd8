"""`persistence-worker replay` on real servers: filters, dry run, --keep, exit codes, racing the loop, Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from tests.integration.harness import settings_env, wait_until
from tests.integration.telemetry_support import (
    buffered_documents,
    read_delivered,
    redelivery_settings,
    running_loop,
)
from tests.support.standins import free_port
from worker.commands.cli import parse_instant
from worker.commands.telemetry import replay_command
from worker.mongo.gateway import gateway_for
from worker.settings import Settings
from worker.telemetry.assembly import buffer_for
from worker.telemetry.buffer import ParkedScope
from worker.telemetry.replay import ReplayOptions, Selection

DAY = datetime(2026, 11, 25, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def document(name: str, *, workflow: str, plan: str, ts: datetime, buffered: datetime, retries: int,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "_id": name,
        "correlation": {"workflow_id": workflow, "plan_id": plan},
        "metrics": {"latency_ms": 5},
        "timestamp": ts,
        "source": "executor",
        "buffered_at": buffered,
        "retry_count": retries,
        **extra,
    }


# Seven documents: two parked, one scheduled far ahead (a replay ignores schedules).
GAVE_UP = {"parked": True, "last_error": "gave up"}
BUFFER = [
    document("a1", workflow="wf-a", plan="plan-1", ts=at(9), buffered=at(10, 0), retries=0),
    document("a2", workflow="wf-a", plan="plan-2", ts=at(9, 30), buffered=at(10, 1), retries=3),
    document("b1", workflow="wf-b", plan="plan-1", ts=at(10), buffered=at(10, 2), retries=0),
    document("b2", workflow="wf-b", plan="plan-1", ts=at(11), buffered=at(9), retries=5),
    document("p1", workflow="wf-a", plan="plan-1", ts=at(9, 15), buffered=at(10, 3), retries=10, **GAVE_UP),
    document("p2", workflow="wf-c", plan="plan-3", ts=at(12), buffered=at(10, 4), retries=10, **GAVE_UP),
    document("s1", workflow="wf-c", plan="plan-3", ts=at(12, 30), buffered=at(10, 5), retries=2,
             next_attempt_at=at(23)),
]  # fmt: skip

FILTER_CASES: dict[str, tuple[Selection, list[str]]] = {
    "everything not parked": (Selection(), ["b2", "a1", "a2", "b1", "s1"]),
    "workflow id": (Selection(workflow_id="wf-a"), ["a1", "a2"]),
    "plan id": (Selection(plan_id="plan-1"), ["b2", "a1", "b1"]),
    "timestamp window": (Selection(since=at(10), until=at(12)), ["b2", "b1"]),
    "buffered_at since": (Selection(since=at(10, 1), time_field="buffered_at"), ["a2", "b1", "s1"]),
    "min retry count": (Selection(min_retry_count=3), ["b2", "a2"]),
    "parked only": (Selection(parked=ParkedScope.ONLY), ["p1", "p2"]),
    "parked included": (Selection(workflow_id="wf-a", parked=ParkedScope.INCLUDE), ["a1", "a2", "p1"]),
    "limit, oldest buffered first": (Selection(limit=2), ["b2", "a1"]),
}


@pytest.fixture
async def settings(unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any) -> Settings:
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)
    return settings


async def delivered_ids(settings: Settings, topic: str | None = None) -> list[str]:
    topic = topic or settings.kafka_telemetry_delivery_topic
    return [m.buffer_id for m in await read_delivered(settings.kafka_bootstrap_servers, topic, idle_ms=1000)]


async def remaining(db: Any) -> set[str]:
    return {doc["_id"] async for doc in db.telemetry_buffer.find({"state": None}, {"_id": 1})}


@pytest.mark.parametrize("case", list(FILTER_CASES))
async def test_each_filter_sends_exactly_the_matching_documents(
    case: str, settings: Settings, mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each filter (workflow, plan, time window on either field, retries, parking, limit) sends exactly its documents, oldest buffered first."""
    selection, expected = FILTER_CASES[case]
    await mongo_db.telemetry_buffer.insert_many([dict(d) for d in BUFFER])
    code = await replay_command(settings, ReplayOptions(selection=selection))
    assert code == 0, capsys.readouterr()
    assert sorted(await delivered_ids(settings)) == sorted(expected)
    assert await remaining(mongo_db) == {d["_id"] for d in BUFFER} - set(expected), (
        "sent documents leave the buffer"
    )
    assert f"sent={len(expected)} failed=0 skipped=0" in capsys.readouterr().out


async def test_a_dry_run_prints_the_count_and_first_rows_and_sends_nothing(
    settings: Settings, mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints how many would be sent and a table of them, and changes neither Kafka nor the buffer."""
    await mongo_db.telemetry_buffer.insert_many([dict(d) for d in BUFFER])
    before = await mongo_db.telemetry_buffer.find().sort("_id", 1).to_list()
    code = await replay_command(
        settings, ReplayOptions(selection=Selection(workflow_id="wf-a"), dry_run=True)
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"dry run: 2 buffered document(s) would be sent to {settings.kafka_telemetry_delivery_topic}" in out
    )
    for column in ("buffer_id", "workflow_id", "retries", "state"):
        assert column in out
    rows = out.replace(settings.kafka_telemetry_delivery_topic, "")  # its random name may hold "b1"
    assert "a1" in rows and "a2" in rows and "b1" not in rows
    assert await delivered_ids(settings) == []
    assert await mongo_db.telemetry_buffer.find().sort("_id", 1).to_list() == before


async def test_keep_sends_and_leaves_the_documents_free_in_the_buffer(
    settings: Settings, mongo_db: Any, create_topics: Any
) -> None:
    """--keep with --to-topic sends copies elsewhere and leaves each document buffered, unclaimed, its attempt counted."""
    other = f"{settings.kafka_telemetry_delivery_topic}.copy"
    await create_topics(other)
    await mongo_db.telemetry_buffer.insert_many([dict(d) for d in BUFFER])
    options = ReplayOptions(selection=Selection(workflow_id="wf-b"), to_topic=other, keep=True)
    assert await replay_command(settings, options) == 0
    assert sorted(await delivered_ids(settings, other)) == ["b1", "b2"]
    assert await delivered_ids(settings) == []
    for stored in await mongo_db.telemetry_buffer.find({"correlation.workflow_id": "wf-b"}).to_list():
        assert "lease_owner" not in stored
        assert stored["retry_count"] == {"b1": 1, "b2": 6}[stored["_id"]]


async def test_exit_code_is_1_when_a_document_fails_and_it_stays_for_later(
    settings: Settings, mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chosen document Kafka refuses makes the exit code 1; it stays buffered (parked) with the error, the rest are sent."""
    documents = buffered_documents(3, seed=51)
    documents[1]["metrics"] = {"blob": "x" * 1_100_000}
    await mongo_db.telemetry_buffer.insert_many(documents)
    assert await replay_command(settings, ReplayOptions(selection=Selection())) == 1
    assert "sent=2 failed=1 skipped=0" in capsys.readouterr().out
    stored = await mongo_db.telemetry_buffer.find_one({"_id": documents[1]["_id"]})
    assert stored["parked"] and "MessageSizeTooLarge" in stored["last_error"]
    assert await mongo_db.telemetry_buffer.count_documents({"state": None}) == 1


async def test_exit_code_is_1_when_another_claimant_holds_a_chosen_document(
    settings: Settings, mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A document leased by another worker is skipped, not sent twice at once, and the exit code says not everything went."""
    documents = buffered_documents(4, seed=52)
    await mongo_db.telemetry_buffer.insert_many(documents)
    gateway = gateway_for(settings)
    await gateway.connect()
    other = buffer_for(settings, gateway.database)
    [held] = (await other.claim_due(other.new_lease_owner(), 1)).documents
    await gateway.close()
    assert await replay_command(settings, ReplayOptions(selection=Selection())) == 1
    out = capsys.readouterr().out
    assert "sent=3 failed=0 skipped=1" in out and "another worker" in out
    assert held["_id"] not in await delivered_ids(settings)
    assert await remaining(mongo_db) == {held["_id"]}


async def test_exit_code_is_3_when_kafka_or_mongodb_cannot_be_reached(
    settings: Settings, mongo_db: Any
) -> None:
    """An unreachable Kafka or MongoDB ends the replay with exit code 3 and leaves the buffer as it was."""
    await mongo_db.telemetry_buffer.insert_many(buffered_documents(2, seed=53))
    dead = f"127.0.0.1:{free_port()}"
    no_kafka = settings.model_copy(update={"kafka_bootstrap_servers": dead})
    no_mongo = settings.model_copy(
        update={"mongodb_uri": SecretStr(f"mongodb://{dead}"), "mongodb_server_selection_timeout_ms": 300}
    )
    assert await replay_command(no_kafka, ReplayOptions(selection=Selection())) == 3
    assert await replay_command(no_mongo, ReplayOptions(selection=Selection())) == 3
    assert await mongo_db.telemetry_buffer.count_documents({"retry_count": 0, "lease_owner": None}) == 2


async def test_a_replay_racing_the_loop_never_sends_a_document_twice(
    settings: Settings, mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay and a redelivery loop draining the same 2000 documents at once deliver each exactly once."""
    documents = buffered_documents(2000, seed=54)
    await mongo_db.telemetry_buffer.insert_many(documents)
    # Small batches for the loop: a batch of 100 is a few round trips, and the loop alone could
    # drain the buffer before the replay has started its producer, leaving no race to test.
    slow_loop = settings.model_copy(update={"redelivery_batch_size": 10})
    async with running_loop(slow_loop, asyncio.Event()) as loop:
        code = await replay_command(settings, ReplayOptions(selection=Selection()))
        await wait_until(lambda: _is_empty(mongo_db), within=60, what="the buffer drained")
    summary = capsys.readouterr().out
    copies = Counter(await delivered_ids(settings))
    assert set(copies) == {d["_id"] for d in documents}
    assert max(copies.values()) == 1
    sent = int(summary.split("sent=")[1].split()[0])
    skipped = int(summary.split("skipped=")[1].split()[0])
    assert sent + loop.delivered == 2000 and sent > 0 and loop.delivered > 0
    assert skipped == loop.delivered, "what the replay skipped, the loop delivered"
    assert code == 1, "not everything chosen was sent by the replay itself"


async def _is_empty(db: Any) -> bool:
    return await db.telemetry_buffer.count_documents({"state": None}) == 0


async def test_ctrl_c_stops_cleanly_losing_nothing_and_leaving_nothing_claimed(
    settings: Settings, mongo_db: Any
) -> None:
    """SIGINT mid-replay ends with exit 130: every document is either delivered and gone or still buffered, and none stays claimed."""
    documents = buffered_documents(2000, seed=55)
    await mongo_db.telemetry_buffer.insert_many(documents)
    env = {**settings_env(settings), "REDELIVERY_BATCH_SIZE": "20"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "replay", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    while not (line := await asyncio.wait_for(process.stderr.readline(), timeout=60)).startswith(b"replay: "):
        assert line, "the replay ended before showing progress"
    process.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 130, out
    assert b"replay interrupted" in out
    left = await remaining(mongo_db)
    sent = set(await delivered_ids(settings))
    assert sent and left, "interrupted mid-way"
    assert sent | left == {d["_id"] for d in documents}, "nothing lost"
    assert not sent & left, "nothing both sent and still buffered"
    assert await mongo_db.telemetry_buffer.count_documents({"lease_owner": {"$exists": True}}) == 0


def test_instants_without_a_zone_are_utc() -> None:
    """--since/--until accept dates and zone-less times as UTC, and convert other zones to UTC."""
    assert parse_instant("2026-11-25") == DAY
    assert parse_instant("2026-11-25T10:00:00") == at(10)
    assert parse_instant("2026-11-25T12:00:00+02:00") == at(10)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_instant("yesterday")
