"""Holds the MongoDB client and hands out the database once it is known to answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import TransientError
from worker.mongo.collections import Document
from worker.mongo.errors import converting
from worker.mongo.uri import client_options
from worker.settings import Settings

log = structlog.get_logger(__name__)


def create_client(settings: Settings, *, timeout_ms: int | None = None) -> AsyncMongoClient[Document]:
    """A client that connects lazily; dates come back zone-aware in UTC; writes are durable.

    `timeout_ms` caps the server selection and connection timeouts (`check` answers in time)."""
    uri = settings.mongodb_uri.get_secret_value()
    options = client_options(
        uri,
        w=settings.mongodb_write_concern,
        journal=settings.mongodb_write_concern_journal,
        appname=settings.kafka_client_id,
        server_selection_timeout_ms=settings.mongodb_server_selection_timeout_ms,
    )
    if timeout_ms is not None:
        selection_ms = min(timeout_ms, settings.mongodb_server_selection_timeout_ms)
        options |= {"serverSelectionTimeoutMS": selection_ms, "connectTimeoutMS": timeout_ms}
    return AsyncMongoClient(uri, **options)


class MongoGateway:
    """The writers' way to the database; `None` until `connect()` has pinged the server."""

    def __init__(self, *, client: AsyncMongoClient[Document], database_name: str) -> None:
        self._client = client
        self._database_name = database_name
        self._database: AsyncDatabase[Document] | None = None

    @property
    def connected(self) -> bool:
        return self._database is not None

    async def connect(self) -> AsyncDatabase[Document]:
        """Ping the server; from then on `database()` answers. Raises TransientError/PermanentError."""
        with converting():
            await self._client.admin.command("ping")
        self._database = self._client[self._database_name]
        return self._database

    def write_concern(self) -> dict[str, Any]:
        """The write concern of every write: MONGODB_URI's `w` and `journal`, else the settings'."""
        return dict(self._client.write_concern.document)

    async def hello(self) -> dict[str, Any]:
        """The server's `hello` answer (its replica set and members); TransientError/PermanentError."""
        with converting():
            return dict(await self._client.admin.command("hello"))

    def database(self) -> AsyncDatabase[Document]:
        """The database, or TransientError with the guide's `mongodb_client_not_initialized` log."""
        if self._database is None:
            log.error("mongodb_client_not_initialized", database=self._database_name)
            raise TransientError("the MongoDB client is not initialised yet")
        return self._database

    async def close(self) -> None:
        await self._client.close()


def gateway_for(settings: Settings, *, timeout_ms: int | None = None) -> MongoGateway:
    """The one way to build a gateway from the settings (not yet connected; close it when done)."""
    client = create_client(settings, timeout_ms=timeout_ms)
    return MongoGateway(client=client, database_name=settings.mongodb_database)


@asynccontextmanager
async def open_gateway(settings: Settings, *, timeout_ms: int | None = None) -> AsyncIterator[MongoGateway]:
    """A gateway for the duration of a `with` block, closed on the way out (not yet connected);
    `timeout_ms` as `create_client` takes it."""
    gateway = gateway_for(settings, timeout_ms=timeout_ms)
    try:
        yield gateway
    finally:
        await gateway.close()
