"""Specification of worker.pipeline.decode: raw record bytes to a validated event, or a precise rejection."""

from __future__ import annotations

from typing import Any

import bson
import orjson
import pytest

from schemas.events import IncidentEvent, WorkflowResultEvent
from tests.support.events import EventFactory
from worker.errors import EventRejected, PermanentError
from worker.pipeline.decode import decode_json_object, validate_event

LIMITS: dict[str, Any] = {"max_bytes": 1024, "max_depth": 8}


def nested(depth: int) -> dict[str, Any]:
    """An object whose nesting depth (top-level object = 1) is `depth`."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"child": value}
    return value


def rejection(raw: bytes | None, **limits: Any) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        decode_json_object(raw, **(LIMITS | limits))
    return caught.value


def test_a_json_object_is_returned_as_a_dict() -> None:
    """A well-formed JSON object decodes to the equal dict."""
    value = {"plan_id": "p-1", "metrics": {"cpu.usage": 0.5}, "list": [1, {"a": None}]}
    assert decode_json_object(orjson.dumps(value), **LIMITS) == value


@pytest.mark.parametrize("raw", [None, b""])
def test_an_empty_value_is_rejected(raw: bytes | None) -> None:
    """A record with no value (tombstone) or an empty one is rejected as empty_value."""
    assert rejection(raw).reason == "empty_value"


def test_a_value_over_the_limit_is_rejected_as_too_large() -> None:
    """A value one byte over max_bytes is rejected as too_large, naming both sizes."""
    raw = orjson.dumps({"pad": "x" * 100})
    error = rejection(raw, max_bytes=len(raw) - 1)
    assert error.reason == "too_large"
    assert str(len(raw)) in error.detail
    assert str(len(raw) - 1) in error.detail


def test_a_value_exactly_at_the_limit_is_accepted() -> None:
    """A value of exactly max_bytes is accepted."""
    raw = orjson.dumps({"pad": "x" * 100})
    assert decode_json_object(raw, max_bytes=len(raw), max_depth=8) == {"pad": "x" * 100}


def test_bytes_that_are_not_utf8_are_rejected() -> None:
    """A value that is not valid UTF-8 is rejected as not_utf8."""
    assert rejection(b'{"plan_id": "\xff\xfe"}').reason == "not_utf8"


@pytest.mark.parametrize("raw", [b"{not json", b"{'a': 1}", b'{"a": NaN}', b"   ", b'{"a": Infinity}'])
def test_text_that_is_not_json_is_rejected(raw: bytes) -> None:
    """Text that is not strict JSON (single quotes, NaN, Infinity, blank) is rejected as not_json."""
    assert rejection(raw).reason == "not_json"


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "list"), (b'"text"', "str"), (b"42", "int"), (b"null", "NoneType")]
)
def test_a_top_level_value_that_is_not_an_object_is_rejected(raw: bytes, kind: str) -> None:
    """Only a JSON object can become a document; anything else is rejected as not_object."""
    error = rejection(raw)
    assert error.reason == "not_object"
    assert kind in error.detail


@pytest.mark.parametrize(
    "value",
    [
        {"$where": "sleep(1000)"},
        {"details": {"inner": {"$gt": 1}}},
        {"metrics": [{"ok": 1}, {"$set": 2}]},
    ],
    ids=["top", "nested", "in-list"],
)
def test_a_dollar_prefixed_key_at_any_depth_is_rejected(value: dict[str, Any]) -> None:
    """Keys starting with `$` are refused wherever they appear, since MongoDB reads them as operators."""
    error = rejection(orjson.dumps(value))
    assert error.reason == "forbidden_key"
    assert "$" in error.detail


@pytest.mark.parametrize("value", [{"bad\x00key": 1}, {"a": {"b\x00": 1}}], ids=["top", "nested"])
def test_a_key_holding_nul_is_rejected(value: dict[str, Any]) -> None:
    """Keys containing NUL cannot be stored in BSON and are rejected as forbidden_key."""
    assert rejection(orjson.dumps(value)).reason == "forbidden_key"


def test_dollar_and_nul_in_values_are_allowed() -> None:
    """Only keys are checked: string values may start with `$` or hold NUL."""
    value = {"a": "$where", "b": "x\x00y", "c": ["$set"]}
    assert decode_json_object(orjson.dumps(value), **LIMITS) == value


def test_dotted_keys_pass() -> None:
    """Keys with dots, common in metric names, are accepted (legal since MongoDB 5)."""
    value = {"metrics": {"cpu.usage": 0.4, "steps.completed": 7}}
    assert decode_json_object(orjson.dumps(value), **LIMITS) == value


def test_nesting_at_the_limit_is_accepted() -> None:
    """An object nested exactly max_depth levels deep is accepted."""
    assert decode_json_object(orjson.dumps(nested(8)), **LIMITS) == nested(8)


@pytest.mark.parametrize("value", [nested(9), {"a": [[[[[[[[1]]]]]]]]}], ids=["objects", "lists"])
def test_nesting_deeper_than_the_limit_is_rejected(value: dict[str, Any]) -> None:
    """Nesting one level deeper than max_depth, through objects or arrays, is rejected as too_deep."""
    error = rejection(orjson.dumps(value))
    assert error.reason == "too_deep"
    assert "8" in error.detail


def test_rejections_are_permanent_errors() -> None:
    """EventRejected is a PermanentError and its message starts with the reason."""
    error = rejection(b"[]")
    assert isinstance(error, PermanentError)
    assert str(error).startswith("not_object: ")


def test_an_integer_that_bson_cannot_store_is_rejected() -> None:
    """A number too large for a 64-bit signed BSON integer is rejected rather than failing the write."""
    raw = b'{"metrics": {"bytes": 9223372036854775808}}'
    value = orjson.loads(raw)
    with pytest.raises(OverflowError):
        bson.encode(value)  # what the writer would hit
    with pytest.raises(EventRejected):
        decode_json_object(raw, **LIMITS)


def test_validate_event_returns_the_model() -> None:
    """A conforming object becomes the route's model instance."""
    data = EventFactory(seed=1).incident()
    assert isinstance(validate_event(IncidentEvent, data), IncidentEvent)


def test_schema_errors_name_every_violated_field() -> None:
    """A schema violation is rejected as schema_violation with each bad field's dotted path in the detail."""
    data = EventFactory(seed=1).result()
    del data["plan_id"]
    data["sla_status"] = {"violations_count": "3"}
    with pytest.raises(EventRejected) as caught:
        validate_event(WorkflowResultEvent, data)
    assert caught.value.reason == "schema_violation"
    assert "plan_id: Field required" in caught.value.detail
    assert "sla_status.violations_count: " in caught.value.detail
