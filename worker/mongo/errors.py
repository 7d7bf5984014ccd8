"""The MongoDB adapter boundary: PyMongo exceptions become TransientError or PermanentError."""

from __future__ import annotations

from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from worker.errors import PermanentError, TransientError, WorkerError

# Server error codes that mean "the cluster is busy or changing; the same write can succeed".
# From the MongoDB driver specs' retryable-writes list.
RETRYABLE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 63, 150, 134, 64}
)


def is_transient(exc: PyMongoError) -> bool:
    """Whether retrying `exc` can succeed: network, selection, timeouts, elections."""
    if not isinstance(exc, PyMongoError):  # e.g. DocumentTooLarge, a bson InvalidDocument
        return False
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WriteConcernError):
        return True
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError"):
        return True
    if getattr(exc, "timeout", False):
        return True
    return isinstance(exc, OperationFailure) and exc.code in RETRYABLE_CODES


def convert(exc: PyMongoError) -> WorkerError:
    """Our error for a PyMongo one; raise it `from exc`."""
    kind = TransientError if is_transient(exc) else PermanentError
    return kind(f"{type(exc).__name__}: {exc}")
