"""The MongoDB adapter boundary: every PyMongo or BSON failure becomes one of three kinds.

    transient          TransientError     network, selection, timeouts, elections, retryable codes
    operation refused  OperationRefused   authentication, authorization, namespace state, write
                                          concern: the operation failed for every document it carried
    document refused   DocumentRefused    too large, not encodable, document validation, another
                                          unique index: that document alone

A reply with `ok: 0` refuses the whole command, so an OperationFailure that is neither
transient nor a per-document error (WriteError, or a code of DOCUMENT_CODES) is an operation
refusal. Inside a bulk write's `writeErrors`, codes are per document unless in OPERATION_CODES.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TypeVar

from bson.errors import InvalidDocument
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
    WriteError,
)

from worker.errors import DocumentRefused, OperationRefused, TransientError, WorkerError

# Server error codes that mean "the cluster is busy or changing; the same write can succeed".
# From the MongoDB driver specs' retryable-writes list.
RETRYABLE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 63, 150, 134, 64}
)
# Codes that refuse the operation rather than a document, even when reported per document.
OPERATION_CODES = frozenset(
    {
        11,  # UserNotFound
        13,  # Unauthorized
        18,  # AuthenticationFailed
        26,  # NamespaceNotFound
        73,  # InvalidNamespace
        166,  # CommandNotSupportedOnView
        8000,  # AtlasError (quota, Atlas-side authorization)
        14031,  # OutOfDiskSpace
    }
)
DUPLICATE_KEY = 11000
# Codes that refuse one document for what it is, even when a whole command reports them.
DOCUMENT_CODES = frozenset(
    {
        DUPLICATE_KEY,
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        17280,  # KeyTooLong
        52,  # DollarPrefixedFieldName
        57,  # DottedFieldName
    }
)


class Kind(Enum):
    """What a failure says about the records the operation carried."""

    TRANSIENT = "transient"
    OPERATION = "operation_refused"
    DOCUMENT = "document_refused"


def _has_retry_label(exc: PyMongoError) -> bool:
    return exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying `exc` can succeed: network, selection, timeouts, elections."""
    if not isinstance(exc, PyMongoError):  # e.g. DocumentTooLarge, a bson InvalidDocument
        return False
    if isinstance(exc, WriteConcernError):
        return False  # applied on the primary, not acknowledged as asked: an operation refusal
    if isinstance(exc, ConnectionFailure | ExecutionTimeout) or _has_retry_label(exc):
        return True
    if getattr(exc, "timeout", False):
        return True
    return isinstance(exc, OperationFailure) and exc.code in RETRYABLE_CODES


def kind_of(exc: BaseException) -> Kind:
    """The kind of a PyMongo or BSON failure raised by one call."""
    if is_transient(exc):
        return Kind.TRANSIENT
    if isinstance(exc, InvalidDocument | OverflowError):  # DocumentTooLarge is an InvalidDocument
        return Kind.DOCUMENT
    if isinstance(exc, WriteError):  # one document's error (DuplicateKeyError included)
        return code_kind(exc.code)
    if isinstance(exc, WriteConcernError):
        return Kind.OPERATION
    if isinstance(exc, OperationFailure) and exc.code in DOCUMENT_CODES:
        return Kind.DOCUMENT
    return Kind.OPERATION


def code_kind(code: int | None) -> Kind:
    """The kind of one entry of a bulk write's `writeErrors`, by its code."""
    if code in RETRYABLE_CODES:
        return Kind.TRANSIENT
    if code in OPERATION_CODES:
        return Kind.OPERATION
    return Kind.DOCUMENT


def error_for(kind: Kind, message: str) -> WorkerError:
    """Our exception of `kind`; raise it `from` the library's."""
    types: dict[Kind, type[WorkerError]] = {
        Kind.TRANSIENT: TransientError,
        Kind.OPERATION: OperationRefused,
        Kind.DOCUMENT: DocumentRefused,
    }
    return types[kind](message)


def convert(exc: BaseException) -> WorkerError:
    """Our error for a PyMongo (or BSON) one; raise it `from exc`."""
    return error_for(kind_of(exc), f"{type(exc).__name__}: {exc}")


@contextmanager
def converting() -> Iterator[None]:
    """The adapter boundary as a block: a PyMongo (or BSON) error inside leaves it as ours, `from` it."""
    try:
        yield
    except (PyMongoError, InvalidDocument) as exc:
        raise convert(exc) from exc


T = TypeVar("T")


async def converted(call: Awaitable[T]) -> T:
    """Await `call`; a PyMongo (or BSON) error leaves as ours (for callers outside mongo/)."""
    with converting():
        return await call
