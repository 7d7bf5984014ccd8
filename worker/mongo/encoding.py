"""Whether PyMongo can encode a document as BSON within MongoDB's size limit, asked per record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.errors import BSONError

from worker.errors import EventRejected

MAX_BSON_BYTES = 16 * 1024 * 1024
"""MongoDB's maxBsonObjectSize: a larger document is refused by the driver before it is sent."""


def check_encodable(document: Mapping[str, Any]) -> None:
    """Raise EventRejected(`unstorable_document`) if BSON cannot hold `document` as it is."""
    try:
        size = len(bson.encode(document))
    except (BSONError, OverflowError, UnicodeEncodeError, TypeError, ValueError) as exc:
        raise EventRejected(
            reason="unstorable_document", detail=f"BSON cannot encode it: {type(exc).__name__}: {exc}"
        ) from exc
    if size > MAX_BSON_BYTES:
        detail = f"BSON document is {size} bytes, the limit is {MAX_BSON_BYTES}"
        raise EventRejected(reason="unstorable_document", detail=detail)
