"""Holds the MongoDB client and hands out the database once it is known to answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from worker.errors import TransientError
from worker.mongo.collections import Document
from worker.mongo.errors import converting
from worker.mongo.uri import client_options
from worker.settings import Settings

log = structlog.get_logger(__name__)


def create_client(settings: Settings) -> AsyncMongoClient[Document]:
    """A client that connects lazily; dates come back zone-aware in UTC; writes are durable."""
    uri = settings.mongodb_uri.get_secret_value()
    options = client_options(
        uri,
        w=settings.mongodb_write_concern,
        journal=settings.mongodb_write_concern_journal,
        appname=settings.kafka_client_id,
        server_selection_timeout_ms=settings.mongodb_server_selection_timeout_ms,
    )
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

    def database(self) -> AsyncDatabase[Document]:
        """The database, or TransientError with the guide's `mongodb_client_not_initialized` log."""
        if self._database is None:
            log.error("mongodb_client_not_initialized", database=self._database_name)
            raise TransientError("the MongoDB client is not initialised yet")
        return self._database

    async def close(self) -> None:
        await self._client.close()


def gateway_for(settings: Settings) -> MongoGateway:
    """The one way to build a gateway from the settings (not yet connected; close it when done)."""
    return MongoGateway(client=create_client(settings), database_name=settings.mongodb_database)


@asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[MongoGateway]:
    """A gateway for the duration of a `with` block, closed on the way out (not yet connected)."""
    gateway = gateway_for(settings)
    try:
        yield gateway
    finally:
        await gateway.close()
