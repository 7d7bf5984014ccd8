"""The MongoDB fakes: a collection, its cursor, a database, a client and the worker's gateway, each with
the calls the worker makes of PyMongo's asynchronous API.

    collection = FakeCollection([{"_id": "a", "parked": True}])    # documents to read
    collection = FakeCollection(errors={"insert_many": bulk_error})  # one call refused
    database = FakeDatabase(telemetry_buffer=collection)           # any other name: an empty collection
    gateway = FakeGateway(database)                                # MongoGateway, connected
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson.codec_options import CodecOptions

Document = dict[str, Any]
ID_INDEX: Document = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
"""The index every collection has, as list_indexes describes it."""


class FakeCursor:
    """The cursor of a find or list_indexes: sort, limit, to_list."""

    def __init__(self, documents: Iterable[Document]) -> None:
        self.documents = list(documents)

    def sort(self, keys: Sequence[tuple[str, int]]) -> FakeCursor:
        for key, direction in reversed(keys):
            self.documents.sort(key=lambda document: document[key], reverse=direction < 0)
        return self

    def limit(self, count: int) -> FakeCursor:
        self.documents = self.documents[:count] if count else self.documents
        return self

    async def to_list(self) -> list[Document]:
        return list(self.documents)


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether `document` answers `query`: equality on each field (a missing field is None), or `$in`."""
    for name, wanted in query.items():
        value = document.get(name)
        if isinstance(wanted, Mapping) and "$in" in wanted:
            if value not in wanted["$in"]:
                return False
        elif value != wanted:
            return False
    return True


class FakeCollection:
    """A collection in memory.

    `documents` answer find, find_one (sorted) and count_documents, each recorded in `queries` as
    (method, query, sort); insert_many and bulk_write store nothing and are recorded in `writes` as
    (method, documents or operations, ordered); `indexes` are what list_indexes describes (the `_id`
    index unless given), create_index adds one. `error` is raised by every call (the server is
    unreachable), `errors[method]` by that method alone (the server refuses it).
    """

    codec_options = CodecOptions(tz_aware=True)

    def __init__(
        self,
        documents: Iterable[Document] = (),
        *,
        indexes: list[Document] | None = None,
        error: Exception | None = None,
        errors: Mapping[str, Exception] | None = None,
    ) -> None:
        self.documents = list(documents)
        self.indexes = [dict(ID_INDEX)] if indexes is None else indexes
        self.error = error
        self.errors = dict(errors or {})
        self.queries: list[tuple[str, Document, Any]] = []
        self.writes: list[tuple[str, Any, bool]] = []

    def _call(self, method: str) -> None:
        failure = self.error or self.errors.get(method)
        if failure is not None:
            raise failure

    def _matching(self, query: Mapping[str, Any]) -> list[Document]:
        return [document for document in self.documents if matches(document, query)]

    def find(self, query: Document, *projection: Any) -> FakeCursor:
        self._call("find")
        self.queries.append(("find", dict(query), None))
        return FakeCursor(self._matching(query))

    async def find_one(self, query: Document, *projection: Any, sort: Any = None) -> Document | None:
        self._call("find_one")
        self.queries.append(("find_one", dict(query), sort))
        found = FakeCursor(self._matching(query)).sort(sort or []).documents
        return found[0] if found else None

    async def count_documents(self, query: Document) -> int:
        self._call("count_documents")
        self.queries.append(("count_documents", dict(query), None))
        return len(self._matching(query))

    async def insert_many(self, documents: Iterable[Document], *, ordered: bool) -> None:
        self.writes.append(("insert_many", list(documents), ordered))
        self._call("insert_many")

    async def bulk_write(self, operations: list[Any], *, ordered: bool) -> None:
        self.writes.append(("bulk_write", operations, ordered))
        self._call("bulk_write")

    async def list_indexes(self) -> FakeCursor:
        self._call("list_indexes")
        return FakeCursor(self.indexes)

    async def create_index(self, keys: list[tuple[str, Any]], **options: Any) -> str:
        self._call("create_index")
        name = "_".join(f"{key}_{direction}" for key, direction in keys)
        self.indexes.append({"v": 2, "key": dict(keys), "name": name, **options})
        return name


class FakeDatabase:
    """A database in memory: collections by name, an empty one made on first use as MongoDB does.

    Records each name asked for (`names`) and each command (`commands`, as (name, *arguments,
    options)); `command` raises `error` if given, applies collMod's expireAfterSeconds to the index
    it names as MongoDB 5.1+ does, and answers {"ok": 1}.
    """

    def __init__(
        self,
        collections: Mapping[str, FakeCollection] | None = None,
        *,
        name: str = "orchestrator",
        error: Exception | None = None,
        **named: FakeCollection,
    ) -> None:
        self.name = name
        self.collections = {**(collections or {}), **named}
        self.error = error
        self.names: list[str] = []
        self.commands: list[tuple[Any, ...]] = []

    def __getitem__(self, name: str) -> FakeCollection:
        self.names.append(name)
        return self.collections.setdefault(name, FakeCollection())

    async def command(self, name: str, *arguments: Any, **options: Any) -> Document:
        self.commands.append((name, *arguments, options))
        if self.error is not None:
            raise self.error
        if name == "collMod":
            self._set_ttl(arguments[0], options["index"])
        return {"ok": 1}

    def _set_ttl(self, collection: str, index: Mapping[str, Any]) -> None:
        for info in self.collections.setdefault(collection, FakeCollection()).indexes:
            if info["key"] == index["keyPattern"]:
                info["expireAfterSeconds"] = index["expireAfterSeconds"]


class FakeClient:
    """AsyncMongoClient: `admin.command("ping")` (raising `error` if given), and databases by name."""

    def __init__(self, error: Exception | None = None) -> None:
        self.admin = FakeDatabase(name="admin", error=error)
        self.databases: dict[str, FakeDatabase] = {}

    def __getitem__(self, name: str) -> FakeDatabase:
        return self.databases.setdefault(name, FakeDatabase(name=name))


class FakeGateway:
    """worker.mongo.gateway.MongoGateway, connected: `database()` hands out `database` (a FakeDatabase unless given)."""

    def __init__(self, database: Any = None, *, connected: bool = True) -> None:
        self._database = FakeDatabase() if database is None else database
        self.connected = connected

    def database(self) -> Any:
        return self._database

    async def connect(self) -> Any:
        return self._database

    async def close(self) -> None:
        return None
