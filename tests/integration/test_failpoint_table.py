"""The error table from mongod's own fault injection: `failCommand` on the worker's writes.

For each error a real deployment returns, the test arms `configureFailPoint failCommand` on the
MongoDB server (`mongod_like_uri`: SecantusDB with its test commands, or the session's mongod),
first under one direct write through the worker's own writer (the driver's exception and the
worker's kind), then under a running worker's writes on a fail-open and a fail-closed route (what
the route did, and that every record consumed is in MongoDB or a dead-letter topic). It renders
the table of docs/reliability.md ("## MongoDB's own fault injection"): with
FAILPOINT_REPORT=docs/reliability.md it rewrites the part between the markers, and in every run
it checks that the committed table is what it saw.
"""

from __future__ import annotations

import asyncio
import difflib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from structlog.testing import capture_logs

from tests.generated_blocks import write_when_asked
from tests.integration.harness import (
    prepare_topics,
    read_topic,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from tests.support.servers import ServerKinds
from worker.errors import TransientError, WorkerError
from worker.mongo.gateway import open_gateway
from worker.mongo.writers import InsertWriter
from worker.settings import RouteName, Settings

DOC = Path(__file__).parents[2] / "docs" / "reliability.md"
START, END = "<!-- failpoint-table:start -->", "<!-- failpoint-table:end -->"
HEADING = "## MongoDB's own fault injection (failCommand)"

FAIL_OPEN, FAIL_CLOSED = RouteName.VALIDATION, RouteName.RESULTS
"""Validation audits are inserted; workflow results are inserted, then upserted where present."""
WRITE_COMMANDS = ["insert", "update"]
"""The commands of the worker's writes (worker/mongo/writers.py: insert_many, bulk_write of UpdateOne)."""
ATTEMPTS = 2
"""RETRY_MAX_ATTEMPTS: each write is tried twice before the route's policy applies."""
TIMES = ATTEMPTS
"""Each fault lasts as many write commands as the worker's attempts."""
EVENTS = 3
"""Events per route and fault, published as one record batch (so one write)."""
SOCKET_TIMEOUT_MS = 2000
BLOCK_MS = 3000
CLIENT_OPTIONS = {"socketTimeoutMS": str(SOCKET_TIMEOUT_MS), "heartbeatFrequencyMS": "500"}
"""MONGODB_URI's options: a client timeout for blockConnection to outlast, and the monitor's
check every 0.5 s (the least), so a server marked Unknown by a state-change error is found
again in 0.5 s rather than PyMongo's default 10 s."""
factory = EventFactory(seed=43)


@dataclass(frozen=True)
class Fault:
    name: str
    injected: str
    """What `data` injects, for the table."""
    data: Mapping[str, Any]
    """failCommand's `data`, besides `failCommands`."""
    settle_s: float = 0.0
    """How long a command the worker gave up on may still run on the server."""


def code(number: int, name: str, *, labelled: bool | None = None) -> Fault:
    """An `ok: 0` reply with error `number`; with `RetryableWriteError` or no label at all when `labelled` is set."""
    data: dict[str, Any] = {"errorCode": number}
    injected = f"`errorCode: {number}` ({name})"
    if labelled is not None:
        data["errorLabels"] = ["RetryableWriteError"] if labelled else []
        injected += ", label `RetryableWriteError`" if labelled else ", no label"
    suffix = "" if labelled is None else ("-label" if labelled else "-nolabel")
    return Fault(f"{number}{suffix}", injected, data)


FAULTS: list[Fault] = [
    *(
        code(number, name, labelled=labelled)
        for number, name in [
            (91, "ShutdownInProgress"),
            (189, "PrimarySteppedDown"),
            (10107, "NotWritablePrimary"),
            (11600, "InterruptedAtShutdown"),
            (11602, "InterruptedDueToReplStateChange"),
        ]
        for labelled in (True, False)
    ),
    code(13, "Unauthorized"),
    code(50, "MaxTimeMSExpired"),
    code(112, "WriteConflict"),
    code(262, "ExceededTimeLimit"),
    Fault("writeConcernError", "`writeConcernError` 64 (WriteConcernFailed, `wtimeout`); the write is applied",
          {"writeConcernError": {"code": 64, "codeName": "WriteConcernFailed",
                                 "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}}}),
    Fault("closeConnection", "`closeConnection: true`", {"closeConnection": True}),
    Fault("blockConnection", f"`blockConnection` {BLOCK_MS} ms, past `socketTimeoutMS={SOCKET_TIMEOUT_MS}`",
          {"blockConnection": True, "blockTimeMS": BLOCK_MS}, settle_s=BLOCK_MS / 1000 + 1),
]  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """One write through the worker's writer under the fault: the driver's exception, the worker's."""

    driver: str
    kind: str


@dataclass
class Phase:
    """One fault under the running worker, on one route."""

    fault: Fault
    route: RouteName
    ids: list[str]
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    fault: Fault
    probe: Probe
    route: RouteName
    did: str
    stored: int
    dead: int
    lost: int


def with_options(uri: str, options: Mapping[str, str]) -> str:
    """`uri` with `options` added to its query string."""
    parts = urlsplit(uri)
    query = "&".join(filter(None, [parts.query, *(f"{k}={v}" for k, v in options.items())]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


async def arm(admin: Any, fault: Fault, times: int) -> None:
    data = {"failCommands": WRITE_COMMANDS, **fault.data}
    await admin.command({"configureFailPoint": "failCommand", "mode": {"times": times}, "data": data})


async def disarm(admin: Any) -> None:
    await admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def probe(settings: Settings, admin: Any, fault: Fault) -> Probe:
    """The error one write of the worker's InsertWriter raises under `fault` (a client of its own,
    so a server marked Unknown there does not concern the worker)."""
    async with open_gateway(settings) as gateway:
        await gateway.connect()
        writer = InsertWriter(gateway=gateway, collection="failpoint_probe")
        await arm(admin, fault, times=1)
        try:
            await writer.write([{"_id": f"probe-{fault.name}"}])
        except WorkerError as exc:
            kind = "transient" if isinstance(exc, TransientError) else "permanent"
            return Probe(driver=type(exc.__cause__).__name__, kind=f"{kind} (`{type(exc).__name__}`)")
        finally:
            await disarm(admin)
    raise AssertionError(f"{fault.name}: the write succeeded under the failpoint")


def event(route: RouteName, identity: str) -> bytes:
    """A valid event of `route` whose document `_id` is `identity`."""
    return orjson.dumps({**factory.good(route), "event_id": identity, "workflow_id": identity})


class Rig:
    """The test's own clients: a producer, a reader of the group's committed offsets."""

    def __init__(self, settings: Settings) -> None:
        bootstrap = settings.kafka_bootstrap_servers
        self.settings = settings
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.kafka_consumer_group,
                                        enable_auto_commit=False)  # fmt: skip
        self.published: Counter[str] = Counter()

    async def publish_together(self, route: RouteName, ids: list[str]) -> None:
        """One record batch, so that the worker reads and writes the events in one go."""
        topic = self.settings.topic_for(route)
        batch = self.producer.create_batch()
        for identity in ids:
            batch.append(key=identity.encode(), value=event(route, identity), timestamp=None)
        batch.close()
        await (await self.producer.send_batch(batch, topic, partition=0))
        self.published[topic] += len(ids)

    async def all_committed(self, route: RouteName) -> bool:
        topic = self.settings.topic_for(route)
        return await self.offsets.committed(TopicPartition(topic, 0)) == self.published[topic]


@pytest.fixture
async def rig(
    unique_name: str, kafka_bootstrap: str, mongod_like_uri: str, create_topics: Any
) -> AsyncIterator[Rig]:
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap,
                            mongo_uri=with_options(mongod_like_uri, CLIENT_OPTIONS),
                            fail_closed_routes=frozenset({FAIL_CLOSED}), retry_max_attempts=ATTEMPTS,
                            mongodb_server_selection_timeout_ms=5000)  # fmt: skip
    await prepare_topics(create_topics, settings, partitions=1)
    rig = Rig(settings)
    await rig.producer.start()
    await rig.offsets.start()
    try:
        yield rig
    finally:
        await rig.offsets.stop()
        await rig.producer.stop()


@pytest.fixture
async def mongod(mongod_like_uri: str, unique_name: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """A client of the server with failpoints; the failpoint is off and the test's database dropped afterwards."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongod_like_uri, serverSelectionTimeoutMS=10_000
    )
    try:
        await disarm(client.admin)
    except OperationFailure as exc:
        await client.close()
        pytest.skip(f"this MongoDB server refuses configureFailPoint (start it with test commands on): {exc}")
    try:
        yield client
    finally:
        await disarm(client.admin)
        await client.drop_database(unique_name)
        await client.close()


async def run_phase(
    rig: Rig, admin: Any, logs: list[dict[str, Any]], fault: Fault, route: RouteName
) -> Phase:
    """Arm the fault for TIMES write commands, publish EVENTS events to `route`, wait until they are committed."""
    phase = Phase(fault, route, [f"fp-{fault.name}-{route.value}-{i}" for i in range(EVENTS)])
    seen = len(logs)
    await arm(admin, fault, times=TIMES)
    try:
        await rig.publish_together(route, phase.ids)
        await wait_until(
            lambda: rig.all_committed(route), within=60, what=f"{fault.name} on {route.value} committed"
        )
    finally:
        await disarm(admin)
    phase.logs = logs[seen:]
    return phase


def times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def what_the_route_did(phase: Phase, settings: Settings, stored: int, reasons: Counter[str]) -> str:
    """From the worker's log lines of the phase and the outcome: retries, holds, then stored or dead-lettered."""
    topic = settings.topic_for(phase.route)
    retries = sum(
        1
        for line in phase.logs
        if line["event"] == "mongodb_write_retry" and line["operation"] == COLLECTION[phase.route]
    )
    holds = sum(1 for line in phase.logs if line["event"] == "partition_paused" and line["topic"] == topic)
    steps = [f"retried {times(retries)}"] if retries else []
    steps += [f"held {times(holds)}"] if holds else []
    if reasons:
        steps.append("dead-lettered " + ", ".join(f"`{reason}`" for reason in sorted(reasons)))
        if stored:
            steps.append("stored too (the write was applied)")
    elif stored:
        steps.append("stored")
    return ", then ".join(steps) or "nothing"


async def observe(
    phases: list[Phase], probes: Mapping[str, Probe], settings: Settings, database: Any
) -> list[Row]:
    """Each phase's row: stored (in MongoDB), dead-lettered (in the route's `.dlq`), lost (neither)."""
    dead: dict[str, list[str]] = {}
    for route in (FAIL_OPEN, FAIL_CLOSED):
        for record in await read_topic(
            settings.kafka_bootstrap_servers, settings.dlq_topic(settings.topic_for(route))
        ):
            dead.setdefault(record.key.decode(), []).append(dict(record.headers)["x-error-reason"].decode())
    rows = []
    for phase in phases:
        found = await database[COLLECTION[phase.route]].distinct("_id", {"_id": {"$in": phase.ids}})
        reasons = Counter(reason for identity in phase.ids for reason in dead.get(identity, []))
        lettered = sum(1 for identity in phase.ids if identity in dead)
        lost = sum(1 for identity in phase.ids if identity not in found and identity not in dead)
        did = what_the_route_did(phase, settings, len(found), reasons)
        rows.append(Row(phase.fault, probes[phase.fault.name], phase.route, did, len(found), lettered, lost))
    return rows


def policy(route: RouteName) -> str:
    return f"{route.value} (fail-{'closed' if route is FAIL_CLOSED else 'open'})"


def failpoint_table(rows: list[Row], server: str) -> str:
    lines = [
        START,
        "_Written by `FAILPOINT_REPORT=docs/reliability.md .venv/bin/pytest "
        f"tests/integration/test_failpoint_table.py` on {server}; every run of that test checks this table._",
        "",
        "| fault | injected on `insert`, `update` | driver exception | worker's kind | route | what the route did "
        "| stored | dead-lettered | lost |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row.fault.name} | {row.fault.injected} | `{row.probe.driver}` | {row.probe.kind} "
                     f"| {policy(row.route)} | {row.did} | {row.stored} | {row.dead} | {row.lost} |")  # fmt: skip
    return "\n".join([*lines, END])


def write_report(table: str) -> None:
    """Rewrite the failpoint table of the file FAILPOINT_REPORT names, if set."""
    write_when_asked("FAILPOINT_REPORT", table, start=START, end=END, heading=HEADING)


def drift(table: str) -> str:
    """The committed table against `table`, as a unified diff ("" when they agree)."""
    text = DOC.read_text()
    committed = (
        START + text.split(START, 1)[1].split(END, 1)[0] + END if START in text and END in text else ""
    )
    return "\n".join(difflib.unified_diff(committed.splitlines(), table.splitlines(), "docs/reliability.md",
                                          "this run", lineterm=""))  # fmt: skip


async def server_description(client: AsyncMongoClient[dict[str, Any]], kinds: ServerKinds) -> str:
    """Which server the table was made on: SecantusDB or mongod, its version, standalone or replica set."""
    version = (await client.admin.command("buildInfo"))["version"]
    topology = "replica set" if "setName" in await client.admin.command("hello") else "standalone"
    name = "SecantusDB (the stand-in)" if kinds.mongo == "standin" else "the session's MongoDB"
    return f"{name}, version {version}, {topology}"


async def test_every_injected_write_error_is_retried_dead_lettered_or_held_and_nothing_is_lost(
    rig: Rig, mongod: AsyncMongoClient[dict[str, Any]], server_kind: ServerKinds
) -> None:
    """Each failCommand error on the worker's writes ends stored or dead-lettered on the fail-open route, stored on the fail-closed one; none is lost."""
    settings, admin = rig.settings, mongod.admin
    probes = {fault.name: await probe(settings, admin, fault) for fault in FAULTS}
    phases: list[Phase] = []
    with capture_logs() as logs:
        async with running_worker(settings) as worker:

            async def started() -> bool:  # its start-up writes too (an update_many), before any fault
                return any(line["event"] == "worker_started" for line in logs)

            await wait_until(started, within=30, what="the worker started")
            for fault in FAULTS:
                for route in (FAIL_OPEN, FAIL_CLOSED):
                    phases.append(await run_phase(rig, admin, logs, fault, route))
                    assert not worker.done(), f"the worker stopped under {fault.name} on {route.value}"
            await asyncio.sleep(max(fault.settle_s for fault in FAULTS))
    rows = await observe(phases, probes, settings, mongod[settings.mongodb_database])
    table = failpoint_table(rows, await server_description(mongod, server_kind))
    write_report(table)
    assert [row for row in rows if row.lost] == [], "records consumed but neither stored nor dead-lettered"
    closed = [row for row in rows if row.route is FAIL_CLOSED]
    assert all((row.stored, row.dead) == (EVENTS, 0) for row in closed), "a fail-closed route dead-lettered"
    assert not (difference := drift(table)), f"docs/reliability.md's failpoint table differs (rerun with "\
        f"FAILPOINT_REPORT=docs/reliability.md):\n{difference}"  # fmt: skip


def test_the_faults_cover_the_issues_error_table() -> None:
    """Every error the issue names is injected, the state changes with and without `RetryableWriteError`."""
    names = {fault.name for fault in FAULTS}
    state_changes = {
        f"{number}-{label}" for number in (91, 189, 10107, 11600, 11602) for label in ("label", "nolabel")
    }
    assert (
        state_changes | {"13", "50", "112", "262", "writeConcernError", "closeConnection", "blockConnection"}
        == names
    )
    assert len(names) == len(FAULTS)
