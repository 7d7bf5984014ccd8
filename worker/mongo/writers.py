"""One writer per collection: a batch of documents in, a WriteOutcome out.

Inserts are unordered bulk writes (one round-trip) whose duplicate-key errors (code 11000)
mean "already stored": redelivery is harmless. Workflow results are inserted too; those
already present are read back (a second round-trip), an identical one is skipped as a
duplicate like any other route's, and the rest are upserted guarded on `consolidated_at`
(a third), so an older result never overwrites a newer one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import bson
from bson.errors import InvalidDocument
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

from worker.errors import OperationRefused
from worker.mongo.collections import Document
from worker.mongo.errors import DUPLICATE_KEY, Kind, code_kind, convert, converting, error_for
from worker.mongo.gateway import MongoGateway

Collection = AsyncCollection[Document]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one bulk write did, by position in the batch."""

    stored: int
    skipped: frozenset[int] = frozenset()
    """Already stored (same `_id`; for a workflow result, the same content), or older than the
    stored workflow result."""
    refused: Mapping[int, str] = field(default_factory=dict)
    """Refused by the server for good (the document itself is the problem)."""


class Writer(Protocol):
    collection: str

    async def write(self, documents: Sequence[Mapping[str, Any]]) -> WriteOutcome: ...


def _outcome_of_bulk_error(exc: BulkWriteError, documents: Sequence[Mapping[str, Any]]) -> WriteOutcome:
    """Per-document codes become refusals; a write concern error, an operation-level or a
    retryable code anywhere in `writeErrors` makes the whole operation fail."""
    details: Mapping[str, Any] = exc.details
    if details.get("writeConcernErrors"):
        raise OperationRefused(f"write concern not satisfied: {details['writeConcernErrors']}") from exc
    errors = details.get("writeErrors", [])
    for kind in (Kind.OPERATION, Kind.TRANSIENT):
        chunk_wide = [err for err in errors if code_kind(err.get("code")) is kind]
        if chunk_wide:
            raise error_for(kind, f"{kind.value} write errors: {chunk_wide[:3]}") from exc
    present = [is_already_stored(err, documents[err["index"]]) for err in errors]
    skipped = frozenset(err["index"] for err, known in zip(errors, present, strict=True) if known)
    refused = {
        err["index"]: f"{err.get('code')}: {err.get('errmsg', '')}"
        for err, known in zip(errors, present, strict=True)
        if not known
    }
    return WriteOutcome(stored=len(documents) - len(skipped) - len(refused), skipped=skipped, refused=refused)


_INDEX_IN_MESSAGE = re.compile(r"index:? '?([^' ]+)")


def is_already_stored(error: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """A duplicate key on the document's identity (`_id`, or a field equal to it such as a
    result's `workflow_id`); a duplicate on another unique index refuses the document.

    MongoDB names the index's fields in `keyPattern`; without it (the stand-in) the message
    names the index ("index: _id_", "index 'idx_<collection>_<field>'") or none for `_id`."""
    if error.get("code") != DUPLICATE_KEY:
        return False
    identity = {key for key, value in document.items() if key == "_id" or value == document.get("_id")}
    pattern = error.get("keyPattern")
    if isinstance(pattern, Mapping):
        return set(pattern) <= identity
    named = _INDEX_IN_MESSAGE.search(str(error.get("errmsg", "")))
    if named is None:
        return True
    index = named.group(1)
    fields = identity - {"_id"}
    return index == "_id_" or any(index == f"{key}_1" or index.endswith(f"_{key}") for key in fields)


async def _bulk(write: Awaitable[object], documents: Sequence[Mapping[str, Any]]) -> WriteOutcome:
    """Await one bulk write and convert its outcome or error at this adapter boundary."""
    try:
        await write
    except BulkWriteError as exc:
        return _outcome_of_bulk_error(exc, documents)
    except (PyMongoError, InvalidDocument, OverflowError) as exc:
        raise convert(exc) from exc
    return WriteOutcome(stored=len(documents))


class InsertWriter:
    """Unordered `insert_many`; an `_id` already present counts as skipped, not failed."""

    def __init__(self, *, gateway: MongoGateway, collection: str) -> None:
        self._gateway = gateway
        self.collection = collection

    async def write(self, documents: Sequence[Mapping[str, Any]]) -> WriteOutcome:
        target = self._gateway.database()[self.collection]
        return await _bulk(target.insert_many(documents, ordered=False), documents)  # type: ignore[arg-type]


class LatestWinsWriter:
    """Insert; where the `_id` exists, skip an identical document, else upsert only over a
    document whose `version_field` is not newer.

    Most results are new: an unordered `insert_many` stores them at the cost of an insert. The
    ones whose `_id` is already stored (11000) are read back: one equal to what is stored is a
    redelivered duplicate, skipped as the other routes skip theirs. (An upsert cannot tell it:
    the update result counts matched and modified per command, not per document, and nx-27017
    counts an identical `$set` as modified.) The others are sent as guarded upserts: when a
    newer document exists the filter does not match, the upsert tries to insert the same `_id`
    and the server answers 11000 again: that result is stale and skipped.
    """

    def __init__(self, *, gateway: MongoGateway, collection: str, version_field: str) -> None:
        self._gateway = gateway
        self.collection = collection
        self._version_field = version_field

    def _operation(self, document: Mapping[str, Any]) -> UpdateOne:
        fields = {key: value for key, value in document.items() if key != "_id"}
        guard = {"_id": document["_id"], self._version_field: {"$lte": document[self._version_field]}}
        return UpdateOne(guard, {"$set": fields}, upsert=True)

    async def write(self, documents: Sequence[Mapping[str, Any]]) -> WriteOutcome:
        target = self._gateway.database()[self.collection]
        inserted = await _bulk(target.insert_many(documents, ordered=False), documents)  # type: ignore[arg-type]
        present = sorted(inserted.skipped)
        if not present:
            return inserted
        identical = await _identical_to_stored(target, [documents[index] for index in present])
        changed = [index for position, index in enumerate(present) if position not in identical]
        guarded = await self._upsert(target, [documents[index] for index in changed])
        duplicates = {present[position] for position in identical}
        stale = {changed[index] for index in guarded.skipped}
        skipped = frozenset(duplicates | stale)
        refused = {**inserted.refused, **{changed[index]: why for index, why in guarded.refused.items()}}
        return WriteOutcome(
            stored=len(documents) - len(skipped) - len(refused), skipped=skipped, refused=refused
        )

    async def _upsert(self, target: Collection, documents: Sequence[Mapping[str, Any]]) -> WriteOutcome:
        """The guarded upserts of `documents` (none: nothing sent)."""
        if not documents:
            return WriteOutcome(stored=0)
        operations = [self._operation(document) for document in documents]
        return await _bulk(target.bulk_write(operations, ordered=False), documents)


async def _identical_to_stored(target: Collection, documents: Sequence[Mapping[str, Any]]) -> set[int]:
    """Positions of the `documents` equal to the stored document of their `_id`, compared as
    MongoDB returns them (dates to the millisecond, in the collection's codec options)."""
    with converting():
        found = await target.find({"_id": {"$in": [document["_id"] for document in documents]}}).to_list()
    stored = {document["_id"]: document for document in found}
    options = target.codec_options
    return {
        position
        for position, document in enumerate(documents)
        if bson.decode(bson.encode(document), codec_options=options) == stored.get(document["_id"])
    }
