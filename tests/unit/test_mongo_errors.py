"""Specification of worker.mongo.errors: which PyMongo failures are worth retrying."""

from __future__ import annotations

import pytest
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
    WTimeoutError,
)

from worker.errors import PermanentError, TransientError
from worker.mongo.errors import convert, is_transient

TRANSIENT = {
    "AutoReconnect": AutoReconnect("connection reset by peer"),
    "NotPrimaryError": NotPrimaryError("not primary"),
    "ServerSelectionTimeoutError": ServerSelectionTimeoutError("db:27017: timed out"),
    "NetworkTimeout": NetworkTimeout("db:27017: timed out"),
    "ExecutionTimeout": ExecutionTimeout("operation exceeded time limit", code=50),
    "WriteConcernError": WriteConcernError("waiting for replication timed out", code=64),
    "WTimeoutError": WTimeoutError("waiting for replication timed out", code=64),
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
PERMANENT = {
    "code 2 BadValue": OperationFailure("bad value", code=2),
    "code 13 Unauthorized": OperationFailure("not authorized on orchestrator", code=13),
    "code 18 AuthenticationFailed": OperationFailure("Authentication failed.", code=18),
    "DuplicateKeyError": DuplicateKeyError("E11000 duplicate key error", code=11000),
    "ConfigurationError": ConfigurationError("unknown option foo"),
    "OperationFailure without code": OperationFailure("unknown"),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_retryable_failures_are_transient(error: PyMongoError) -> None:
    """Network errors, timeouts, elections and errors labelled retryable convert to TransientError."""
    assert is_transient(error)
    assert isinstance(convert(error), TransientError)


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
def test_other_failures_are_permanent(error: PyMongoError) -> None:
    """Auth failures, bad values, duplicate keys and oversized documents convert to PermanentError."""
    assert not is_transient(error)
    converted = convert(error)
    assert isinstance(converted, PermanentError)
    assert not isinstance(converted, TransientError)


def test_the_converted_message_names_the_pymongo_error() -> None:
    """The converted error's message starts with the PyMongo class name, then its message."""
    converted = convert(AutoReconnect("db:27017: connection closed"))
    assert str(converted) == "AutoReconnect: db:27017: connection closed"


def test_an_oversized_document_is_permanent() -> None:
    """DocumentTooLarge (a document over the server's BSON limit) converts to PermanentError."""
    error = DocumentTooLarge("BSON document too large (17000000 bytes)")
    assert not is_transient(error)  # type: ignore[arg-type]
    assert isinstance(convert(error), PermanentError)  # type: ignore[arg-type]
