"""aiokafka's errors become ours here, so that the code above kafka/ sees only worker.errors types.

    a record refused for its size or form           DocumentRefused   (sending it again cannot help)
      (MessageSizeTooLarge, RecordTooLarge, RecordListTooLarge, CorruptRecord, the broker's INVALID_RECORD)
    any other KafkaError, OSError, TimeoutError      TransientError    (the cluster may answer later)

The converted error's text is "<aiokafka class>: <message>" and its `__cause__` the original
exception (`worker.kafka.diagnose.kafka_failure` reads it to tell the operator why).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from worker.errors import DocumentRefused, TransientError, WorkerError

T = TypeVar("T")

KAFKA_ERRORS: tuple[type[Exception], ...] = (KafkaError, OSError, TimeoutError)
"""What a call to aiokafka raises when the cluster (or the record) is the problem."""
INVALID_RECORD = 87
"""The broker's INVALID_RECORD error code (aiokafka has no class for it: UnknownError)."""
_REFUSED_AS_SUCH = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)


def is_kafka_error(exc: BaseException) -> bool:
    """An error of the cluster, the client or the network rather than a bug of ours."""
    return isinstance(exc, KAFKA_ERRORS)


def refused_as_such(exc: BaseException) -> bool:
    """The broker (or the producer) refuses this record for its size or form, not for now."""
    return isinstance(exc, _REFUSED_AS_SUCH) or getattr(exc, "errno", None) == INVALID_RECORD


def convert(exc: BaseException) -> WorkerError:
    """Our error for an aiokafka (or socket) error; raise it `from exc`."""
    if isinstance(exc, WorkerError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if refused_as_such(exc):
        return DocumentRefused(text)
    return TransientError(text)


async def converted(call: Awaitable[T]) -> T:
    """Await `call`; an aiokafka (or socket) error leaves as our own type (see the module docstring)."""
    try:
        return await call
    except KAFKA_ERRORS as exc:
        raise convert(exc) from exc
