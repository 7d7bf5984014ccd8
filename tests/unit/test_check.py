"""`check` as the operator's pre-flight, without servers: the topics it asks for, how it reads
partitions, indexes and the write concern, its exit codes, and the timeouts that bound it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from worker.commands import check
from worker.commands.exits import ExitCode
from worker.errors import TransientError
from worker.kafka.diagnose import KafkaUnavailable
from worker.kafka.probe import cluster_topics
from worker.kafka.topics import NeededTopic, TopicFinding, compare_topics, needed_topics
from worker.mongo.gateway import create_client
from worker.mongo.indexes import CollectionIndexReport, IndexSpec
from worker.mongo.write_concern import WriteConcern, listed_members
from worker.ops.messages import ServerFailure
from worker.settings import Settings

INPUT = NeededTopic("orchestrator.incidents", "input of incidents", consumed=True)
DEAD_LETTERS = NeededTopic("orchestrator.incidents.dlq", "dead letters of incidents", consumed=False)


@pytest.fixture(autouse=True)
def _root_logger_level_kept() -> Iterator[None]:
    """`check` mutes the libraries' loggers through the root logger's level: put it back."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_the_check_answers_within_two_seconds_whatever_the_servers_do() -> None:
    """Each server gets at most 1.5 s, both at once, and MongoDB's own timeouts end before that bound."""
    assert check.SERVER_TIMEOUT_S <= 2.0
    assert check.MONGODB_SELECTION_TIMEOUT_S < check.SERVER_TIMEOUT_S


async def test_the_mongodb_client_of_check_is_bounded_whatever_the_uri_and_settings_say() -> None:
    """`check`'s client waits at most MONGODB_SELECTION_TIMEOUT_S to select and to connect, even when told longer."""
    settings = Settings(
        mongodb_uri="mongodb://db1:27017/?connectTimeoutMS=20000&serverSelectionTimeoutMS=30000",
        mongodb_server_selection_timeout_ms=30_000,
    )
    client = create_client(settings, timeout_ms=int(check.MONGODB_SELECTION_TIMEOUT_S * 1000))
    try:
        assert client.options.server_selection_timeout == check.MONGODB_SELECTION_TIMEOUT_S
        assert client.options.pool_options.connect_timeout == check.MONGODB_SELECTION_TIMEOUT_S
    finally:
        await client.close()


async def test_check_opens_mongodb_with_its_bounded_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """`inspect_mongodb` asks for the bounded client, and a ping that fails becomes the operator's line."""
    asked: list[int | None] = []

    class Refusing:
        async def connect(self) -> None:
            raise TransientError("connection refused")

    @asynccontextmanager
    async def open_gateway(_settings: Settings, *, timeout_ms: int | None = None) -> AsyncIterator[Any]:
        asked.append(timeout_ms)
        yield Refusing()

    monkeypatch.setattr(check, "open_gateway", open_gateway)
    found = await check.inspect_mongodb(Settings())
    assert asked == [1000]
    assert isinstance(found, ServerFailure) and found.server == "MongoDB"


async def test_the_kafka_metadata_client_of_check_times_out_with_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The metadata client's request timeout is the check's bound, and an unreachable cluster is KafkaUnavailable."""
    asked: list[int] = []

    class Unreachable:
        async def bootstrap(self) -> None:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

        async def close(self) -> None:
            return None

    def create_metadata_client(_settings: Settings, *, request_timeout_ms: int) -> Unreachable:
        asked.append(request_timeout_ms)
        return Unreachable()

    monkeypatch.setattr("worker.kafka.probe.create_metadata_client", create_metadata_client)
    with pytest.raises(KafkaUnavailable) as caught:
        await cluster_topics(Settings(), timeout_s=check.SERVER_TIMEOUT_S)
    assert asked == [1500]
    assert caught.value.failure.reason == "no broker answered"


def test_the_needed_topics_are_every_input_its_dead_letters_and_the_delivery_topic() -> None:
    """Four inputs, each followed by its dead-letter topic (KAFKA_DLQ_SUFFIX), then the telemetry delivery topic."""
    names = [topic.name for topic in needed_topics(Settings(kafka_dlq_suffix="-dead"))]
    assert names == [
        "orchestrator.validation", "orchestrator.validation-dead", "orchestrator.results",
        "orchestrator.results-dead", "orchestrator.incidents", "orchestrator.incidents-dead",
        "orchestrator.telemetry", "orchestrator.telemetry-dead", "observability.telemetry",
    ]  # fmt: skip


def test_without_redelivery_the_delivery_topic_is_not_needed() -> None:
    """REDELIVERY_ENABLED=false: `run` sends no telemetry, so its topic is not asked for."""
    names = {topic.name for topic in needed_topics(Settings(redelivery_enabled=False))}
    assert "observability.telemetry" not in names and len(names) == 8


def test_a_topic_the_cluster_lacks_is_not_ok_and_named() -> None:
    """A needed topic absent from the cluster's list is one `not ok` line with its name and role."""
    [finding] = compare_topics([DEAD_LETTERS], {"orchestrator.incidents": 6})
    assert check.topic_line(finding, max_replicas=None) == (
        "not ok", "topic orchestrator.incidents.dlq (dead letters of incidents) does not exist",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "partitions", "expected"),
    [
        (INPUT, 3, ("warning", "topic orchestrator.incidents (input of incidents): 3 partitions, fewer than "
                               "--max-replicas 6: replicas beyond 3 read none of it")),
        (INPUT, 6, ("ok", "topic orchestrator.incidents (input of incidents): 6 partitions")),
        (DEAD_LETTERS, 1, ("ok", "topic orchestrator.incidents.dlq (dead letters of incidents): 1 partition")),
    ],
    ids=["input-short", "input-enough", "dead-letters-never-compared"],
)  # fmt: skip
def test_only_input_topics_with_fewer_partitions_than_max_replicas_are_warned(
    topic: NeededTopic, partitions: int, expected: tuple[str, str]
) -> None:
    """With --max-replicas 6, an input topic of 3 partitions is a warning; a dead-letter topic never is."""
    assert check.topic_line(TopicFinding(topic, partitions), max_replicas=6) == expected


def test_missing_indexes_warn_and_a_conflict_is_not_ok() -> None:
    """Indexes `run` creates at start-up are a warning; one with other options is not ok, as `ensure` leaves it."""
    wanted, found = IndexSpec(keys=(("a", 1),), unique=True), IndexSpec(keys=(("a", 1),))
    report = CollectionIndexReport("incidents", present=[IndexSpec(keys=(("b", 1),))],
                                   missing=[IndexSpec(keys=(("c", 1),))], conflicts=[(wanted, found)])  # fmt: skip
    statuses = [status for status, _ in check.index_lines(report)]
    assert statuses == ["not ok", "warning"]
    assert check.index_lines(CollectionIndexReport("incidents", present=[wanted])) == [
        ("ok", "indexes of incidents: 1 of 1 as expected")
    ]


@pytest.mark.parametrize(
    ("w", "members", "below"),
    [("majority", 3, False), ("dc-tag", 3, False), (1, 3, True), (2, 3, False), (2, 5, True), (0, 1, True),
     (1, 1, False), (1, None, True)],
)  # fmt: skip
def test_a_write_concern_below_a_majority_of_the_members_is_flagged(
    w: int | str, members: int | None, below: bool
) -> None:
    """A number below a majority of the listed members (or behind a mongos, where it is unknown) is flagged."""
    concern = WriteConcern(w=w, journal=True, source="MONGODB_URI", members=members)
    assert concern.below_majority is below
    assert check.write_concern_line(concern)[0] == ("warning" if below else "ok")


def test_the_members_are_counted_from_hello() -> None:
    """A replica set's hosts, passives and arbiters count; a standalone server is one; a mongos is unknown."""
    assert listed_members({"setName": "rs0", "hosts": ["a", "b"], "passives": ["c"], "arbiters": ["d"]}) == 4
    assert listed_members({"isWritablePrimary": True}) == 1
    assert listed_members({"msg": "isdbgrid"}) is None


def _findings(*, missing_topic: bool) -> tuple[list[TopicFinding], check.MongoFindings]:
    topics = [TopicFinding(INPUT, 6), TopicFinding(DEAD_LETTERS, None if missing_topic else 1)]
    concern = WriteConcern(w="majority", journal=True, source="MONGODB_WRITE_CONCERN", members=3)
    return topics, check.MongoFindings([CollectionIndexReport("incidents")], concern)


@pytest.mark.parametrize(("missing_topic", "code"), [(False, ExitCode.OK), (True, ExitCode.PROBLEM)])
async def test_check_exits_1_when_a_topic_is_missing_and_0_when_none_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing_topic: bool, code: int
) -> None:
    """Every finding is one line on stdout; a missing topic makes the exit 1, nothing else printed on stderr."""
    topics, mongodb = _findings(missing_topic=missing_topic)

    async def inspect_kafka(_settings: Settings) -> list[TopicFinding]:
        return topics

    async def inspect_mongodb(_settings: Settings) -> check.MongoFindings:
        return mongodb

    monkeypatch.setattr(check, "inspect_kafka", inspect_kafka)
    monkeypatch.setattr(check, "inspect_mongodb", inspect_mongodb)
    assert await check.check_command(Settings(), [], None) == code
    out, err = capsys.readouterr()
    assert ("does not exist" in out) is missing_topic
    assert out.splitlines()[0] == "ok: Kafka at localhost:9092 answers" and err == ""


async def test_an_unreachable_server_is_exit_3_and_the_other_is_still_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MongoDB unreachable: its one line on stderr, exit 3; Kafka's findings still on stdout."""
    topics, _ = _findings(missing_topic=False)
    failure = ServerFailure(
        server="MongoDB", where="db1:27017", reason="connection refused", variable="MONGODB_URI"
    )

    async def inspect_kafka(_settings: Settings) -> list[TopicFinding]:
        return topics

    async def inspect_mongodb(_settings: Settings) -> ServerFailure:
        return failure

    monkeypatch.setattr(check, "inspect_kafka", inspect_kafka)
    monkeypatch.setattr(check, "inspect_mongodb", inspect_mongodb)
    assert await check.check_command(Settings(), [], None) == ExitCode.UNREACHABLE
    out, err = capsys.readouterr()
    assert err == "not ok: cannot reach MongoDB at db1:27017 (connection refused); check MONGODB_URI\n"
    assert "topic orchestrator.incidents (input of incidents): 6 partitions" in out
