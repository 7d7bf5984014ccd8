"""Specification of worker.mongo.errors: PyMongo failures in three kinds (transient, operation, document)."""

from __future__ import annotations

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from tests.support.mongo import FakeCollection, FakeDatabase
from worker.errors import DocumentRefused, OperationRefused, PermanentError, TransientError
from worker.mongo.errors import convert, converting, is_transient
from worker.mongo.queries import recent_incidents_query

TRANSIENT = {
    "AutoReconnect": AutoReconnect("connection reset by peer"),
    "NotPrimaryError": NotPrimaryError("not primary"),
    "ServerSelectionTimeoutError": ServerSelectionTimeoutError("db:27017: timed out"),
    "NetworkTimeout": NetworkTimeout("db:27017: timed out"),
    "ExecutionTimeout": ExecutionTimeout("operation exceeded time limit", code=50),
    "code 91 ShutdownInProgress": OperationFailure("shutting down", code=91),
    "code 10107 NotWritablePrimary": OperationFailure("not primary", code=10107),
    "code 11600 InterruptedAtShutdown": OperationFailure("interrupted at shutdown", code=11600),
    "code 189 PrimarySteppedDown": OperationFailure("primary stepped down", code=189),
    "label RetryableWriteError": OperationFailure(
        "some failure", code=12345, details={"errorLabels": ["RetryableWriteError"]}
    ),
    "label TransientTransactionError": OperationFailure(
        "some failure", code=12345, details={"errorLabels": ["TransientTransactionError"]}
    ),
}
OPERATION_REFUSED = {
    "code 2 BadValue": OperationFailure("bad value", code=2),
    "code 13 Unauthorized": OperationFailure("not authorized on orchestrator", code=13),
    "code 18 AuthenticationFailed": OperationFailure("Authentication failed.", code=18),
    "code 26 NamespaceNotFound": OperationFailure("ns not found", code=26),
    "WriteConcernError": WriteConcernError("waiting for replication timed out", code=64),
    "WTimeoutError": WTimeoutError("waiting for replication timed out", code=64),
    "WriteConcernError labelled retryable": WriteConcernError(
        "not enough data-bearing nodes", code=100, details={"errorLabels": ["RetryableWriteError"]}
    ),
    "WriteError code 13": WriteError("not authorized", code=13),
    "ConfigurationError": ConfigurationError("unknown option foo"),
    "OperationFailure without code": OperationFailure("unknown"),
}
DOCUMENT_REFUSED: dict[str, Exception] = {
    "DuplicateKeyError": DuplicateKeyError("E11000 duplicate key error", code=11000),
    "WriteError code 121": WriteError("Document failed validation", code=121),
    "OperationFailure code 121": OperationFailure("Document failed validation", code=121),
    "OperationFailure code 11000": OperationFailure("E11000 duplicate key error", code=11000),
    "DocumentTooLarge": DocumentTooLarge("BSON document too large (17000000 bytes)"),
    "InvalidDocument": InvalidDocument("cannot encode object: <object>"),
    "OverflowError": OverflowError("MongoDB can only handle up to 8-byte ints"),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_retryable_failures_are_transient(error: PyMongoError) -> None:
    """Network errors, timeouts, elections and errors labelled retryable convert to TransientError."""
    assert is_transient(error)
    assert isinstance(convert(error), TransientError)


@pytest.mark.parametrize("error", OPERATION_REFUSED.values(), ids=OPERATION_REFUSED.keys())
def test_refusals_of_the_operation_are_operation_refused(error: PyMongoError) -> None:
    """Auth failures, write concern errors and other command-level refusals convert to OperationRefused."""
    assert not is_transient(error)
    converted = convert(error)
    assert isinstance(converted, OperationRefused)
    assert isinstance(converted, PermanentError)


@pytest.mark.parametrize("error", DOCUMENT_REFUSED.values(), ids=DOCUMENT_REFUSED.keys())
def test_refusals_of_one_document_are_document_refused(error: Exception) -> None:
    """Duplicate keys, validation failures and documents BSON cannot encode convert to DocumentRefused."""
    assert not is_transient(error)
    assert isinstance(convert(error), DocumentRefused)


def test_the_converted_message_names_the_pymongo_error() -> None:
    """The converted error's message starts with the PyMongo class name, then its message."""
    converted = convert(AutoReconnect("db:27017: connection closed"))
    assert str(converted) == "AutoReconnect: db:27017: connection closed"


def test_a_block_converted_raises_ours_from_the_pymongo_error() -> None:
    """Inside `converting()`, a PyMongoError leaves as our kind of error, chained to the original."""
    original = AutoReconnect("connection reset by peer")
    with pytest.raises(TransientError) as raised, converting():
        raise original
    assert raised.value.__cause__ is original


async def test_a_query_that_fails_raises_ours() -> None:
    """A guide query whose server fails mid-way raises a WorkerError, never PyMongo's own."""
    refused = OperationFailure("not authorized on orchestrator", code=13)
    database = FakeDatabase(incidents=FakeCollection(errors={"find": refused}))
    with pytest.raises(OperationRefused):
        await recent_incidents_query().run(database)  # type: ignore[arg-type]
