"""Properties of decoding arbitrary input: it never fails in any way but EventRejected."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent
from worker.errors import EventRejected
from worker.pipeline.decode import decode_json_object, validate_event

MODELS = (ValidationEvent, WorkflowResultEvent, IncidentEvent, TelemetryEvent)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)


def outcome(raw: bytes) -> str:
    try:
        value = decode_json_object(raw, max_bytes=10_000, max_depth=8)
        for model in MODELS:
            with contextlib.suppress(EventRejected):
                validate_event(model, value)
    except EventRejected as exc:
        return exc.reason
    return "accepted"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_accepted_or_rejected_never_crash(raw: bytes) -> None:
    """Any byte string either decodes or raises EventRejected with a reason code."""
    assert outcome(raw)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_is_accepted_or_rejected_never_crash(value: Any) -> None:
    """Any JSON document (nested, odd keys, huge integers) either passes or is rejected with a reason."""
    try:
        raw = orjson.dumps(value)
    except TypeError:  # orjson refuses integers beyond 64 bits on output; nothing to test
        return
    result = outcome(raw)
    if not isinstance(value, dict):
        assert result == "not_object"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=5).map(lambda s: "$" + s), st.integers(min_value=0, max_value=3))
def test_a_dollar_key_at_any_depth_is_rejected(key: str, depth: int) -> None:
    """A `$`-prefixed key is refused wherever it is nested."""
    value: dict[str, Any] = {key: 1}
    for _ in range(depth):
        value = {"nested": [value]}
    assert outcome(orjson.dumps(value)) == "forbidden_key"
