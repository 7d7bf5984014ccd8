"""Holds the MongoDB client and hands out the database once it is known to answer."""

from __future__ import annotations

from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from worker.errors import TransientError
from worker.mongo.errors import convert
from worker.settings import Settings

log = structlog.get_logger(__name__)

Document = dict[str, Any]


def create_client(settings: Settings) -> AsyncMongoClient[Document]:
    """A client that connects lazily; dates come back zone-aware in UTC."""
    return AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb_server_selection_timeout_ms,
        appname=settings.kafka_client_id,
    )


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
        try:
            await self._client.admin.command("ping")
        except PyMongoError as exc:
            raise convert(exc) from exc
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
