"""Specification of worker.mongo.writers: bulk writes, their outcomes, and error conversion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge, OperationFailure, PyMongoError

from tests.support.mongo import FakeCollection, FakeDatabase, FakeGateway
from worker.errors import DocumentRefused, OperationRefused, TransientError
from worker.mongo.gateway import MongoGateway
from worker.mongo.writers import InsertWriter, LatestWinsWriter, WriteOutcome

Document = dict[str, Any]


def bulk_error(
    *write_errors: dict[str, Any], write_concern_errors: tuple[Document, ...] = ()
) -> BulkWriteError:
    return BulkWriteError(
        {
            "writeErrors": list(write_errors),
            "writeConcernErrors": list(write_concern_errors),
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
    )


def write_error(index: int, code: int, errmsg: str = "failed", **extra: Any) -> dict[str, Any]:
    return {"index": index, "code": code, "errmsg": errmsg, **extra}


def docs(count: int) -> list[Document]:
    return [{"_id": f"e-{index}", "workflow_id": f"wf-{index}"} for index in range(count)]


def refusing(error: Exception | None = None, *, stored: tuple[Document, ...] = ()) -> FakeCollection:
    """A collection whose writes (insert_many, bulk_write) raise `error`, holding `stored`."""
    return FakeCollection(stored, errors=dict.fromkeys(("insert_many", "bulk_write"), error) if error else None)


def insert_writer(collection: FakeCollection) -> tuple[InsertWriter, FakeDatabase]:
    database = FakeDatabase(incidents=collection)
    return InsertWriter(gateway=FakeGateway(database), collection="incidents"), database  # type: ignore[arg-type]


async def outcome_of(error: BulkWriteError, documents: list[Document]) -> WriteOutcome:
    """What InsertWriter makes of its bulk insert of `documents` raising `error`."""
    writer, _ = insert_writer(refusing(error))
    return await writer.write(documents)


async def test_duplicate_keys_are_skipped() -> None:
    """Write errors with code 11000 (already stored) count as skipped, the rest as stored."""
    outcome = await outcome_of(bulk_error(write_error(0, 11000), write_error(3, 11000)), docs(5))
    assert outcome == WriteOutcome(stored=3, skipped=frozenset({0, 3}), refused={})


async def test_other_write_errors_are_refusals_with_code_and_message() -> None:
    """Non-retryable write errors other than 11000 are refused documents, keyed by position."""
    error = bulk_error(
        write_error(1, 11000),
        write_error(2, 121, "Document failed validation"),
        write_error(4, 2, "bad value"),
    )
    outcome = await outcome_of(error, docs(5))
    assert outcome.stored == 2
    assert outcome.skipped == frozenset({1})
    assert outcome.refused == {2: "121: Document failed validation", 4: "2: bad value"}


async def test_write_concern_errors_refuse_the_operation() -> None:
    """A bulk write whose write concern was not satisfied raises OperationRefused (an outage of the chunk)."""
    error = bulk_error(write_concern_errors=({"code": 64, "errmsg": "waiting for replication timed out"},))
    with pytest.raises(OperationRefused, match="write concern") as caught:
        await outcome_of(error, docs(2))
    assert caught.value.__cause__ is error


@pytest.mark.parametrize("code", [91, 10107, 11600, 189])
async def test_retryable_write_error_codes_are_transient(code: int) -> None:
    """If any write error has a retryable code (e.g. the primary stepped down), the batch is transient."""
    with pytest.raises(TransientError, match="transient"):
        await outcome_of(bulk_error(write_error(0, 11000), write_error(1, code)), docs(2))


@pytest.mark.parametrize("code", [13, 18])
async def test_an_operation_level_code_among_write_errors_refuses_the_whole_chunk(code: int) -> None:
    """An authorization or authentication code in writeErrors makes the whole bulk write OperationRefused."""
    error = bulk_error(write_error(0, 121), write_error(2, code, "not authorized on orchestrator"))
    with pytest.raises(OperationRefused, match="not authorized") as caught:
        await outcome_of(error, docs(3))
    assert caught.value.__cause__ is error


DUPLICATES_ON_ANOTHER_INDEX = {
    "keyPattern": write_error(1, 11000, "E11000 dup key", keyPattern={"ticket": 1}, keyValue={"ticket": 7}),
    "MongoDB message": write_error(1, 11000, "E11000 duplicate key error collection: o.c index: ticket_1"),
    "stand-in message": write_error(1, 11000, "UNIQUE constraint failed: index 'idx_incidents_ticket'"),
}


@pytest.mark.parametrize(
    "error", DUPLICATES_ON_ANOTHER_INDEX.values(), ids=DUPLICATES_ON_ANOTHER_INDEX.keys()
)
async def test_a_duplicate_on_another_unique_index_is_a_refusal(error: dict[str, Any]) -> None:
    """A duplicate key on an index other than the document's identity refuses that document alone."""
    outcome = await outcome_of(bulk_error(error), docs(3))
    assert outcome == WriteOutcome(stored=2, refused={1: f"11000: {error['errmsg']}"})


DUPLICATES_OF_THE_IDENTITY = {
    "keyPattern _id": write_error(0, 11000, "E11000", keyPattern={"_id": 1}, keyValue={"_id": "wf-0"}),
    "keyPattern workflow_id": write_error(0, 11000, "E11000", keyPattern={"workflow_id": 1}),
    "MongoDB message": write_error(0, 11000, "E11000 duplicate key error collection: o.c index: _id_"),
    "stand-in _id": write_error(0, 11000, "UNIQUE constraint failed: workflow_results._id"),
    "stand-in workflow_id": write_error(
        0, 11000, "UNIQUE constraint failed: index 'idx_workflow_results_workflow_id'"
    ),
}


@pytest.mark.parametrize("error", DUPLICATES_OF_THE_IDENTITY.values(), ids=DUPLICATES_OF_THE_IDENTITY.keys())
async def test_a_duplicate_of_the_documents_identity_is_skipped(error: dict[str, Any]) -> None:
    """A duplicate on `_id`, or on a field equal to it (a result's workflow_id), means already stored."""
    result = {"_id": "wf-0", "workflow_id": "wf-0", "status": "done"}
    outcome = await outcome_of(bulk_error(error), [result])
    assert outcome == WriteOutcome(stored=0, skipped=frozenset({0}))


async def test_insert_writer_inserts_the_batch_unordered_in_one_call() -> None:
    """InsertWriter sends the whole batch in one unordered insert_many and reports all stored."""
    collection = FakeCollection()
    writer, database = insert_writer(collection)
    documents = [{"_id": "a"}, {"_id": "b"}]
    assert await writer.write(documents) == WriteOutcome(stored=2)
    assert collection.writes == [("insert_many", documents, False)]
    assert database.names == ["incidents"]


async def test_insert_writer_turns_bulk_errors_into_an_outcome() -> None:
    """A BulkWriteError with duplicates becomes an outcome with those positions skipped."""
    writer, _ = insert_writer(refusing(bulk_error(write_error(1, 11000))))
    outcome = await writer.write([{"_id": "a"}, {"_id": "b"}])
    assert outcome == WriteOutcome(stored=1, skipped=frozenset({1}))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AutoReconnect("connection closed"), TransientError),
        (OperationFailure("not authorized", code=13), OperationRefused),
    ],
)
async def test_insert_writer_converts_pymongo_errors(error: PyMongoError, expected: type[Exception]) -> None:
    """Other PyMongo errors leave the writer as TransientError or OperationRefused, chained."""
    writer, _ = insert_writer(refusing(error))
    with pytest.raises(expected) as caught:
        await writer.write([{"_id": "a"}])
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [DocumentTooLarge("BSON document too large"), OverflowError("MongoDB can only handle up to 8-byte ints")],
    ids=["DocumentTooLarge", "OverflowError"],
)
async def test_a_document_bson_cannot_encode_is_refused(error: Exception) -> None:
    """A batch the driver cannot encode makes the writer raise DocumentRefused, chained to the cause."""
    writer, _ = insert_writer(refusing(error))
    with pytest.raises(DocumentRefused) as caught:
        await writer.write([{"_id": "a"}])
    assert caught.value.__cause__ is error


async def test_writers_fail_transiently_before_mongodb_is_connected() -> None:
    """A writer whose gateway has not connected yet raises TransientError without touching MongoDB."""
    client: AsyncMongoClient[Document] = AsyncMongoClient("mongodb://localhost:1", connect=False)
    try:
        gateway = MongoGateway(client=client, database_name="orchestrator")
        with pytest.raises(TransientError):
            await InsertWriter(gateway=gateway, collection="incidents").write([{"_id": "a"}])
    finally:
        await client.close()


def test_latest_wins_writer_upserts_guarded_on_the_version_field() -> None:
    """Each result is an upsert by `_id` that only matches a stored document not newer than it."""
    writer = LatestWinsWriter(
        gateway=FakeGateway(),  # type: ignore[arg-type]
        collection="workflow_results",
        version_field="consolidated_at",
    )
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    document = {"_id": "wf-1", "workflow_id": "wf-1", "status": "COMPLETED", "consolidated_at": when}
    assert writer._operation(document) == UpdateOne(
        {"_id": "wf-1", "consolidated_at": {"$lte": when}},
        {"$set": {"workflow_id": "wf-1", "status": "COMPLETED", "consolidated_at": when}},
        upsert=True,
    )


async def test_latest_wins_writer_reports_stale_results_as_skipped() -> None:
    """A stale result (its guarded upsert collides on `_id`, code 11000) is skipped, not refused."""
    collection = refusing(bulk_error(write_error(0, 11000)))
    database = FakeDatabase(workflow_results=collection)
    writer = LatestWinsWriter(
        gateway=FakeGateway(database),  # type: ignore[arg-type]
        collection="workflow_results",
        version_field="consolidated_at",
    )
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    outcome = await writer.write(
        [{"_id": "wf-1", "consolidated_at": when}, {"_id": "wf-2", "consolidated_at": when}]
    )
    assert outcome == WriteOutcome(stored=1, skipped=frozenset({0}))
    [(insert, documents, insert_ordered), (method, operations, ordered)] = collection.writes
    assert (insert, len(documents), insert_ordered) == ("insert_many", 2, False)
    assert (method, ordered) == ("bulk_write", False)
    assert operations == [writer._operation({"_id": "wf-1", "consolidated_at": when})]
    assert set(database.names) == {"workflow_results"}


async def test_latest_wins_writer_inserts_new_results_without_an_upsert() -> None:
    """Results whose `_id` is not stored yet are inserted in one unordered insert_many, nothing more."""
    collection = FakeCollection()
    writer = LatestWinsWriter(
        gateway=FakeGateway(FakeDatabase(workflow_results=collection)),  # type: ignore[arg-type]
        collection="workflow_results",
        version_field="consolidated_at",
    )
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    documents = [{"_id": "wf-1", "consolidated_at": when}, {"_id": "wf-2", "consolidated_at": when}]
    assert await writer.write(documents) == WriteOutcome(stored=2)
    assert collection.writes == [("insert_many", documents, False)]


def latest_wins_writer(collection: FakeCollection) -> LatestWinsWriter:
    gateway = FakeGateway(FakeDatabase(workflow_results=collection))
    return LatestWinsWriter(gateway=gateway, collection="workflow_results", version_field="consolidated_at")  # type: ignore[arg-type]


async def test_an_identical_result_already_stored_is_a_duplicate_skipped_and_not_rewritten() -> None:
    """A redelivered result equal to the stored one (its insert collides) is skipped like any route's duplicate; no upsert is sent for it."""
    when = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    result = {"_id": "wf-1", "workflow_id": "wf-1", "metrics": {"steps": 7}, "consolidated_at": when}
    as_stored = {**result, "consolidated_at": when.replace(microsecond=123000)}  # BSON dates: milliseconds
    collection = refusing(bulk_error(write_error(0, 11000)), stored=(as_stored,))
    outcome = await latest_wins_writer(collection).write([result, {**result, "_id": "wf-2"}])
    assert outcome == WriteOutcome(stored=1, skipped=frozenset({0}))
    assert [method for method, _, _ in collection.writes] == ["insert_many"]


async def test_a_changed_result_already_stored_is_upserted_and_counted_stored() -> None:
    """A result whose stored version differs (same consolidated_at, another status) goes to the guarded upsert and counts as stored."""
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    result = {"_id": "wf-1", "status": "COMPLETED", "consolidated_at": when}
    collection = refusing(bulk_error(write_error(0, 11000)), stored=({**result, "status": "RUNNING"},))
    del collection.errors["bulk_write"]
    writer = latest_wins_writer(collection)
    assert await writer.write([result]) == WriteOutcome(stored=1)
    [_, (method, operations, _)] = collection.writes
    assert (method, operations) == ("bulk_write", [writer._operation(result)])
