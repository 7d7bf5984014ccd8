"""Turning a record's raw bytes into a validated event, or a precise rejection.

Checks run cheapest first: presence, size, UTF-8, JSON, shape (object at the top,
nesting depth, no `$`-prefixed or NUL-holding keys anywhere, because MongoDB treats
those as operators or cannot store them), then the route's pydantic model.
Keys with dots are legal in MongoDB 5+ and common in metric names; they pass.
Integers beyond 64 bits are refused from the raw text: the parser would turn them into
floats (99999999999999999999999 -> 1e+23) and a different number would be stored.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from worker.errors import EventRejected

ModelT = TypeVar("ModelT", bound=BaseModel)


def decode_json_object(raw: bytes | None, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Parse `raw` as a JSON object that MongoDB can store, or raise EventRejected."""
    return decode_vouched(raw, max_bytes=max_bytes, max_depth=max_depth)[0]


def decode_vouched(raw: bytes | None, *, max_bytes: int, max_depth: int) -> tuple[dict[str, Any], bool]:
    """As `decode_json_object`, and whether `surely_storable` vouched for the text (no walk needed)."""
    if raw is None or raw == b"":
        raise EventRejected(reason="empty_value", detail="the record has no value")
    if len(raw) > max_bytes:
        raise EventRejected(reason="too_large", detail=f"value is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _parse_failure(raw, exc) from exc
    if not isinstance(value, dict):
        raise EventRejected(
            reason="not_object", detail=f"value is a JSON {type(value).__name__}, not an object"
        )
    if surely_storable(raw, max_depth=max_depth):
        return value, True
    try:
        check_integers(raw)
        check_storable(value, max_depth=max_depth)
    except EventRejected as exc:
        claimed = value.get("event_id")
        exc.event_id = claimed if isinstance(claimed, str) else None
        raise
    return value, False


def _parse_failure(raw: bytes, exc: orjson.JSONDecodeError) -> EventRejected:
    """Name why orjson refused `raw`: not UTF-8, nested past its own limit, or not JSON."""
    # orjson refuses invalid UTF-8 too: tell the two apart only on this (rare) path.
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as not_utf8:
        return EventRejected(reason="not_utf8", detail=f"value is not UTF-8: {not_utf8}")
    message = str(exc)
    if message.startswith("depth limit exceeded"):
        return EventRejected(reason="too_deep", detail=f"nesting deeper than the parser allows: {exc}")
    if message.startswith("number is infinity"):  # valid JSON (1e400), but no double holds it
        return EventRejected(reason="unstorable_number", detail=f"a number overflows a double: {exc}")
    return EventRejected(reason="not_json", detail=f"value is not JSON: {exc}")


_STRING_OR_LONG_INTEGER = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"'  # a whole string, escapes included: its digits are text
    rb"|(-?[0-9]{19,})(?![0-9.eE])"  # an integer literal of 19 digits or more
    rb"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",  # any other number, consumed whole
    re.DOTALL,
)


def check_integers(raw: bytes) -> None:
    """Refuse an integer literal of `raw` (valid JSON) that does not fit in 64 bits, as written."""
    for match in _STRING_OR_LONG_INTEGER.finditer(raw):
        literal = match.group(1)
        if literal is not None and not _fits_int64(literal):
            digits = len(literal.lstrip(b"-"))
            shown = (literal if digits <= 40 else literal[:20] + b"..." + literal[-10:]).decode()
            detail = f"integer {shown} ({digits} digits) does not fit in 64 bits"
            raise EventRejected(reason="unstorable_number", detail=detail)


_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_NINETEEN_DIGITS = b"0" * 19


def surely_storable(raw: bytes, *, max_depth: int) -> bool:
    """A cheap test on the raw JSON text: True means `check_storable` would pass for sure.

    No key can start with `$` or hold NUL unless the text has `"$` or a `\\u00..` escape
    (`\\u0024`, `\\u0000`; JSON escapes a NUL, a raw one is invalid); nesting cannot exceed
    the number of `{` and `[`; an integer beyond 64 bits needs 19 digits in a row or more.
    False only means "walk the document".
    """
    return (
        raw.count(b"{") + raw.count(b"[") <= max_depth
        and b'"$' not in raw
        and b"\\u00" not in raw
        and _NINETEEN_DIGITS not in raw.translate(_DIGITS_AS_ZERO)
    )


def check_storable(value: dict[str, Any], *, max_depth: int) -> None:
    """Refuse keys MongoDB would misread (`$...`, NUL) and nesting deeper than `max_depth`."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise EventRejected(
                reason="too_deep", detail=f"nesting deeper than {max_depth} levels at {path or '/'}"
            )
        if isinstance(node, dict):
            for key, child in node.items():
                child_path = f"{path}/{key}"
                if key.startswith("$") or "\x00" in key:
                    raise EventRejected(
                        reason="forbidden_key",
                        detail=f"key {key!r} at {path or '/'} starts with '$' or holds NUL",
                    )
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, child_path))
                else:
                    _check_number(child, child_path)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, f"{path}/{index}"))
                else:
                    _check_number(child, f"{path}/{index}")


_INT64 = range(-(2**63), 2**63)


def _fits_int64(literal: bytes) -> bool:
    """JSON forbids leading zeros, so 20 digits or more never fit; int() refuses over 4,300 digits."""
    return len(literal.lstrip(b"-")) <= 19 and int(literal) in _INT64


def _check_number(value: object, path: str) -> None:
    """BSON stores integers in 64 bits; a larger JSON integer cannot be kept as it is."""
    if type(value) is int and value not in _INT64:
        raise EventRejected(reason="unstorable_number", detail=f"integer at {path} does not fit in 64 bits")


def validate_event(model: type[ModelT], value: dict[str, Any]) -> ModelT:
    """Validate against the route's contract; every violated field is named in the detail."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise schema_violation(exc) from exc


def schema_violation(exc: ValidationError, *, event_id: str | None = None) -> EventRejected:
    """The rejection of an event its contract refuses, naming every violated field."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '/'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    )
    return EventRejected(reason="schema_violation", detail=problems, event_id=event_id)
