"""The per-record path, total: a record's value and headers become a document or a rejection.

Nothing raised while decoding, validating or building the document escapes. Input the
contract rejects becomes a `validation` rejection with its reason code; any other exception
(a bug, or input no check foresaw) an `unprocessable` one that names the exception class,
so one record can never stop its partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import ValidationError

from worker.dead_letters.headers import ERROR_TYPE_UNPROCESSABLE, ERROR_TYPE_VALIDATION
from worker.errors import EventRejected
from worker.mongo.encoding import check_encodable
from worker.pipeline.decode import decode_vouched, schema_violation
from worker.pipeline.routes import Route

SURELY_ENCODABLE_BYTES = 2 * 1024 * 1024
"""Below this size, JSON that passes `surely_storable` always fits in 16 MiB of BSON.

The worst growth from JSON to BSON is an array of one-digit integers: `0,` (2 bytes)
becomes type, index key and int32 (at most 13 bytes), so 2 MiB of JSON stays under 14 MB.
"""


class Ready(NamedTuple):
    """A document to write (a tuple: one is made per record, and a tuple is the cheapest to make)."""

    document: Mapping[str, Any]
    event_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record to dead-letter, and why."""

    error_type: str
    reason: str
    detail: str
    event_id: str | None
    error: BaseException | None = None
    """The unexpected exception (for `unprocessable` only): its class and stack are reported."""


def prepare(
    route: Route, value: bytes | None, headers: Sequence[tuple[str, Any]], *, max_bytes: int, max_depth: int
) -> Ready | Rejected:
    """The document `value` becomes on `route`, or why it cannot; never raises."""
    try:
        return _document(route, value, max_bytes=max_bytes, max_depth=max_depth)
    except EventRejected as exc:
        event_id = exc.event_id or header_event_id(headers)
        return Rejected(ERROR_TYPE_VALIDATION, exc.reason, exc.detail, event_id)
    except Exception as exc:  # the path is total: an unforeseen failure rejects this record alone
        detail = f"{type(exc).__name__} while preparing the record: {_text(exc)}"
        return Rejected(ERROR_TYPE_UNPROCESSABLE, "unexpected_error", detail, header_event_id(headers), exc)


def _document(route: Route, raw: bytes | None, *, max_bytes: int, max_depth: int) -> Ready:
    value, vouched = decode_vouched(raw, max_bytes=max_bytes, max_depth=max_depth)
    try:
        event = route.validate(value)
    except ValidationError as exc:
        claimed = value.get("event_id")
        raise schema_violation(exc, event_id=claimed if isinstance(claimed, str) else None) from exc
    document = route.to_document(event)
    if not vouched or len(raw or b"") > SURELY_ENCODABLE_BYTES:  # raw is set: decoding refused None
        check_encodable(document)
    return Ready(document, event.event_id)


def header_event_id(headers: Sequence[tuple[str, Any]]) -> str | None:
    """The `event_id` header, if the producer set one; any bytes (or none) are read without raising."""
    try:
        for key, value in headers:
            if key == "event_id" and isinstance(value, bytes | bytearray | memoryview):
                return bytes(value).decode("utf-8", "replace")
    except (TypeError, ValueError):  # not a sequence of pairs: no hint
        return None
    return None


def _text(exc: BaseException) -> str:
    """`str(exc)`, or its class name when even that raises."""
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break the rejection
        return type(exc).__name__
