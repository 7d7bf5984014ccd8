"""Shared fixtures: real Kafka-protocol and MongoDB-protocol servers, and per-test isolation.

Each server is chosen in this order: the one named by KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI;
else a testcontainers container when a Docker engine answers; else a local stand-in from
`tests.support.standins` (tansu, nx-27017). `tests.support.servers` chooses, `server_kind` says
which. When MongoDB is a stand-in, a test marked `both_mongo` runs twice, on nx-27017 and on
SecantusDB (`mongo_server`, ids `nx-27017` / `secantusdb`): `mongo_uri`, `mongo_client` and
`mongo_db` then name the chosen server. A test marked `standin_deviation(server="nx-27017" |
"secantusdb" | "tansu", raises=Exc, reason=...)` is written to the real server's behaviour; only
when it runs against THAT implementation is it a strict xfail expecting `Exc`, so a failure of
another kind (the product stored nothing) still fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.support.processes import Started, none_left_running
from tests.support.servers import (
    KAFKA_ENV,
    MONGO_ENV,
    MONGO_STANDINS,
    NX27017,
    SECANTUS,
    ServerKinds,
    current_kinds,
    deviation_xfail,
    docker_answers,
    item_implementations,
    session_implementations,
)
from tests.support.standins import (
    LocalKafka,
    LocalMongo,
    LocalSecantus,
    StandInError,
    find_nx27017,
    find_secantusd,
    find_tansu,
    free_port,
)

Document = dict[str, Any]
CreateTopics = Callable[..., Awaitable[None]]


class ControllableMongo(Protocol):
    """A dedicated MongoDB server that a test may stop and start again, keeping its data."""

    @property
    def uri(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A `both_mongo` test runs once per MongoDB stand-in (ids nx-27017, secantusdb) when MongoDB is a
    stand-in; against a real server (MONGODB_URI or a container) once, on it."""
    if metafunc.definition.get_closest_marker("both_mongo") is None:
        return
    if "mongo_server" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: both_mongo needs mongo_uri, mongo_client or mongo_db"
        )
    if current_kinds().mongo == "standin":
        metafunc.parametrize("mongo_server", MONGO_STANDINS, indirect=True, ids=MONGO_STANDINS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Turn each `standin_deviation` into a strict xfail where the test runs against its stand-in."""
    for item in items:
        xfail = deviation_xfail(item, item_implementations(item, current_kinds()))
        if xfail is not None:
            item.add_marker(xfail)


CHAOS_DIR = "tests/chaos/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: the chaos scenarios form one group, run one after another by one worker
    (each loads the CPU heavily and some are sensitive to it); every other test is sent on its own.

    Decided here from the test ids, because the controller collects nothing, and pytest-xdist 3.8
    cannot group by `xdist_group` markers under pytest 9.2 (it renames `item._nodeid`, which
    pytest 9.2 no longer reads)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ChaosInOneGroup(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "chaos" if nodeid.startswith(CHAOS_DIR) else super()._split_scope(nodeid)

    return ChaosInOneGroup(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """On the pytest-xdist controller (which loads no conftest below this one): the chaos summary."""
    if terminalreporter.config.pluginmanager.has_plugin("dsession"):
        from tests.chaos.conftest import rows_from_workers, write_summary

        write_summary(terminalreporter, rows_from_workers(terminalreporter))


@pytest.fixture(scope="session")
def server_kind() -> ServerKinds:
    """Which kind of server (env, container, standin) backs the session's Kafka and MongoDB."""
    return current_kinds()


@pytest.fixture(scope="session")
def kafka_bootstrap(server_kind: ServerKinds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address (host:port) of a Kafka-protocol broker for the whole session."""
    if server_kind.kafka == "env":
        yield os.environ[KAFKA_ENV]
    elif server_kind.kafka == "container":
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
    else:
        with LocalKafka(log_dir=tmp_path_factory.mktemp("kafka")) as kafka:
            yield kafka.bootstrap


@pytest.fixture(scope="session")
def session_mongo_uri(server_kind: ServerKinds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection URI of the session's MongoDB-protocol server (MONGODB_URI, a container or nx-27017)."""
    if server_kind.mongo == "env":
        yield os.environ[MONGO_ENV]
    elif server_kind.mongo == "container":
        from testcontainers.community.mongodb import MongoDbContainer

        with MongoDbContainer() as container:
            yield container.get_connection_url()
    else:
        with LocalMongo(log_dir=tmp_path_factory.mktemp("mongo")) as mongo:
            yield mongo.uri


@pytest.fixture(scope="session")
def secantus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SecantusDB for the session, started the first time a test asks for it."""
    with LocalSecantus(log_dir=tmp_path_factory.mktemp("secantus")) as secantus:
        yield secantus.uri


@pytest.fixture
def mongo_server(request: pytest.FixtureRequest, server_kind: ServerKinds) -> str:
    """The MongoDB implementation this test runs on: the `both_mongo` parameter, else the session's."""
    chosen: str = getattr(request, "param", session_implementations(server_kind)[1])
    return chosen


@pytest.fixture
def mongo_uri(mongo_server: str, request: pytest.FixtureRequest) -> str:
    """Connection URI of the MongoDB-protocol server this test runs on (see `mongo_server`)."""
    uri: str = request.getfixturevalue("secantus_uri" if mongo_server == SECANTUS else "session_mongo_uri")
    return uri


@pytest.fixture(scope="session")
def mongod_like_uri(server_kind: ServerKinds, request: pytest.FixtureRequest) -> str:
    """A MongoDB-protocol server whose query planner and `explain` are mongod's: the session's server when it
    is a real one (MONGODB_URI or a container), else SecantusDB (WiredTiger, real explain)."""
    uri: str = request.getfixturevalue(
        "session_mongo_uri" if server_kind.mongo != "standin" else "secantus_uri"
    )
    return uri


class _MongoContainer:
    """A MongoDB container bound to a fixed host port, so its URI survives a restart."""

    def __init__(self) -> None:
        from testcontainers.community.mongodb import MongoDbContainer

        self._container = MongoDbContainer().with_bind_ports(27017, free_port())
        self.uri = ""

    def __enter__(self) -> _MongoContainer:
        self._container.start()
        self.uri = self._container.get_connection_url()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._container.stop()

    def stop(self) -> None:
        self._container.get_wrapped_container().stop()

    def start(self) -> None:
        self._container.get_wrapped_container().start()
        client: MongoClient[Document] = MongoClient(self.uri, serverSelectionTimeoutMS=60_000)
        try:
            client.admin.command("ping")
        finally:
            client.close()


CONTROLLABLE_ENV = "CONTROLLABLE_MONGO"


@pytest.fixture
def controllable_mongo(tmp_path: Path, mongo_server: str) -> Iterator[ControllableMongo]:
    """A dedicated durable MongoDB for outage tests: a container when Docker answers, else a stand-in with its
    data on disk: nx-27017, or SecantusDB for a `both_mongo` test's secantusdb run or with CONTROLLABLE_MONGO=secantusdb."""
    if docker_answers():
        with _MongoContainer() as container:
            yield container
        return
    chosen = os.environ.get(CONTROLLABLE_ENV) or (mongo_server if mongo_server in MONGO_STANDINS else NX27017)
    if chosen not in MONGO_STANDINS:
        raise pytest.UsageError(f"{CONTROLLABLE_ENV}={chosen!r}: expected one of {', '.join(MONGO_STANDINS)}")
    server_class, find = (LocalSecantus, find_secantusd) if chosen == SECANTUS else (LocalMongo, find_nx27017)
    try:
        find()
    except StandInError as exc:
        pytest.skip(f"no controllable MongoDB: no Docker engine answers and {exc}")
    with server_class(db_path=tmp_path / f"{chosen}.db", log_dir=tmp_path) as mongo:
        yield mongo


@pytest.fixture
def controllable_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A dedicated local tansu broker for outage tests; it loses all data when restarted."""
    try:
        find_tansu()
    except StandInError as exc:
        pytest.skip(f"no controllable Kafka: {exc}")
    with LocalKafka(log_dir=tmp_path) as kafka:
        yield kafka


@pytest.fixture
def processes() -> Iterator[list[Started]]:
    """Processes a test starts (append each `WorkerProcess` before starting it); any still running
    at the end is killed, so a failed test leaves none behind."""
    with none_left_running() as started:
        yield started


@pytest.fixture
def unique_name() -> str:
    """A fresh name such as `t_1a2b3c4d`, for per-test topic prefixes and database names."""
    return f"t_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def create_topics(kafka_bootstrap: str) -> AsyncIterator[CreateTopics]:
    """`await create_topics(*names, partitions=N)` creates topics; they are deleted afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(*names: str, partitions: int = 1) -> None:
        topics = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        response = await admin.create_topics(topics)
        failures = [entry for entry in response.topic_errors if entry[1] != 0]
        if failures:
            raise RuntimeError(f"could not create topics: {failures}")
        created.extend(names)

    try:
        yield create
        if created:
            await admin.delete_topics(created)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def _mongo_clients() -> AsyncIterator[dict[str, AsyncMongoClient[Document]]]:
    """One async client per server URI, shared by the session and closed at its end."""
    clients: dict[str, AsyncMongoClient[Document]] = {}
    yield clients
    for client in clients.values():
        await client.close()


@pytest.fixture
async def mongo_client(
    mongo_uri: str, _mongo_clients: dict[str, AsyncMongoClient[Document]]
) -> AsyncMongoClient[Document]:
    """An async PyMongo client (tz-aware datetimes) on `mongo_uri`, shared by the session."""
    if mongo_uri not in _mongo_clients:
        _mongo_clients[mongo_uri] = AsyncMongoClient(
            mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
    return _mongo_clients[mongo_uri]


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[Document], unique_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A database of its own for one test, dropped afterwards."""
    yield mongo_client[unique_name]
    await mongo_client.drop_database(unique_name)
