"""Specification of worker.mongo.gateway: the database is handed out only once MongoDB answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError
from structlog.testing import capture_logs

from tests.support.mongo import FakeClient
from worker.errors import PermanentError, TransientError
from worker.mongo.gateway import MongoGateway, create_client, gateway_for, open_gateway
from worker.settings import Settings

Document = dict[str, Any]


@pytest.fixture
async def lazy_client() -> AsyncIterator[AsyncMongoClient[Document]]:
    """A real client that has not contacted any server (connect=False)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient("mongodb://localhost:1", connect=False)
    yield client
    await client.close()


def test_database_before_connect_logs_and_raises_transient(lazy_client: AsyncMongoClient[Document]) -> None:
    """Before `connect()`, `database()` logs `mongodb_client_not_initialized` and raises TransientError."""
    gateway = MongoGateway(client=lazy_client, database_name="orchestrator")
    with capture_logs() as logs, pytest.raises(TransientError):
        gateway.database()
    assert logs == [
        {"event": "mongodb_client_not_initialized", "database": "orchestrator", "log_level": "error"}
    ]
    assert not gateway.connected


async def test_connect_pings_then_hands_out_the_database() -> None:
    """After a successful ping the gateway is connected and `database()` answers the named database."""
    client = FakeClient()
    gateway = MongoGateway(client=client, database_name="orchestrator")  # type: ignore[arg-type]
    assert await gateway.connect() is client["orchestrator"]
    assert client.admin.commands == [("ping", {})]
    assert gateway.connected
    with capture_logs() as logs:
        assert gateway.database() is client["orchestrator"]
    assert logs == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServerSelectionTimeoutError("localhost:27017: connection refused"), TransientError),
        (OperationFailure("Authentication failed.", code=18), PermanentError),
    ],
)
async def test_a_failed_ping_leaves_the_gateway_unconnected(
    error: PyMongoError, expected: type[Exception]
) -> None:
    """A failed ping raises the converted error and `database()` keeps refusing."""
    gateway = MongoGateway(client=FakeClient(error), database_name="orchestrator")  # type: ignore[arg-type]
    with pytest.raises(expected):
        await gateway.connect()
    assert not gateway.connected
    with capture_logs(), pytest.raises(TransientError):
        gateway.database()


async def test_create_client_returns_utc_aware_dates_and_uses_the_settings() -> None:
    """The client decodes dates zone-aware and uses the configured server selection timeout."""
    settings = Settings(mongodb_server_selection_timeout_ms=1500, kafka_client_id="pw-test")
    client = create_client(settings)
    try:
        assert client.codec_options.tz_aware is True
        assert client.options.server_selection_timeout == 1.5
        assert client.options.pool_options.metadata["application"] == {"name": "pw-test"}
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("uri", "overrides", "expected"),
    [
        ("mongodb://db:27017", {}, {"w": "majority", "j": True}),
        ("mongodb://db:27017/?w=1", {}, {"w": 1, "j": True}),
        ("mongodb://a:1,b:2/orchestrator?replicaSet=rs0&journal=false", {}, {"w": "majority", "j": False}),
        ("mongodb://db:27017/?W=2&appName=x", {"mongodb_write_concern_journal": False}, {"w": 2, "j": False}),
        ("mongodb://db:27017", {"mongodb_write_concern": "2"}, {"w": 2, "j": True}),
    ],
    ids=["defaults", "uri-w-wins", "uri-journal-wins", "uri-w-any-case", "numeric-setting"],
)
async def test_writes_are_majority_and_journaled_unless_the_uri_says_otherwise(
    uri: str, overrides: dict[str, Any], expected: Document
) -> None:
    """The client's write concern is MONGODB_WRITE_CONCERN(_JOURNAL), except where MONGODB_URI sets w or journal."""
    client = create_client(Settings(mongodb_uri=uri, **overrides))
    try:
        assert client.write_concern.document == expected
    finally:
        await client.close()


async def test_gateway_for_builds_an_unconnected_gateway_on_the_configured_database() -> None:
    """gateway_for gives a gateway for MONGODB_DATABASE that has not pinged yet (the client connects lazily)."""
    gateway = gateway_for(Settings(mongodb_database="audit"))
    try:
        assert isinstance(gateway, MongoGateway)
        assert not gateway.connected
        assert gateway._database_name == "audit"
    finally:
        await gateway.close()


async def test_open_gateway_closes_the_client_on_the_way_out() -> None:
    """open_gateway yields a gateway and closes its client when the block ends, even on an error."""
    with pytest.raises(RuntimeError):
        async with open_gateway(Settings()) as gateway:
            client = gateway._client
            raise RuntimeError("boom")
    with pytest.raises(Exception, match=r"closed|Cannot use"):
        await client.admin.command("ping")
