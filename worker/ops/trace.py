"""W3C Trace Context: the trace id of a record's `traceparent` header, validated strictly.

https://www.w3.org/TR/trace-context/#traceparent-header: `version-traceid-parentid-flags`,
lower-case hex; version `ff`, an all-zero trace id or parent id are invalid; a version above
`00` may carry more fields after a `-`. Anything else (or two `traceparent` headers) is no trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HEADER = "traceparent"
_HEX = "[0-9a-f]"
_TRACEPARENT = re.compile(
    rf"(?P<version>{_HEX}{{2}})-(?P<trace_id>{_HEX}{{32}})-(?P<parent_id>{_HEX}{{16}})-{_HEX}{{2}}"
)
_INVALID_VERSION = "ff"
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def parse_traceparent(value: bytes | None) -> str | None:
    """The trace id of one `traceparent` value, or None when the value is not valid."""
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        return None
    match = _TRACEPARENT.match(text)
    if match is None or match["version"] == _INVALID_VERSION:
        return None
    rest = text[match.end() :]
    if rest and (match["version"] == "00" or not rest.startswith("-")):
        return None
    if match["trace_id"] == _ZERO_TRACE or match["parent_id"] == _ZERO_PARENT:
        return None
    return match["trace_id"]


def trace_id(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The trace id of a record's single `traceparent` header (name case-insensitive); never raises."""
    try:
        values = [value for name, value in headers or () if str(name).lower() == HEADER]
    except (TypeError, ValueError):
        return None
    if len(values) != 1:
        return None
    return parse_traceparent(values[0])
