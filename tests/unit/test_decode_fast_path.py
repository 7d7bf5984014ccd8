"""The raw-text shortcut of decoding never lets through what the full walk would refuse."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import EventRejected
from worker.pipeline.decode import check_storable, decode_json_object, surely_storable

keys = st.text(max_size=6) | st.sampled_from(["$where", "a\x00b", "$", "cpu.usage", "\\u0024"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=40,
)


def walk_accepts(value: dict[str, Any], max_depth: int) -> bool:
    try:
        check_storable(value, max_depth=max_depth)
    except EventRejected:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=5), st.integers(min_value=2, max_value=8))
def test_the_shortcut_says_storable_only_when_the_full_walk_agrees(
    value: dict[str, Any], max_depth: int
) -> None:
    """Whatever the document, `surely_storable` true implies `check_storable` passes."""
    try:
        raw = orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits cannot be dumped by orjson
        return
    if surely_storable(raw, max_depth=max_depth):
        assert walk_accepts(value, max_depth)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": {"\\u0024where": 1}}',
        b'{"a": [{"b\\u0000": 1}]}',
        b'{"n": 9223372036854775808}',
        b'{"a": {"b": {"c": {"d": 1}}}}',
    ],
)
def test_escaped_keys_huge_integers_and_deep_nesting_are_still_refused(raw: bytes) -> None:
    """Escaped `$`/NUL keys, integers beyond 64 bits and nesting past the limit take the full walk."""
    with pytest.raises(EventRejected):
        decode_json_object(raw, max_bytes=10_000, max_depth=3)


def test_a_typical_event_takes_the_shortcut() -> None:
    """An ordinary event needs no walk: the shortcut answers for it."""
    raw = orjson.dumps({"event_id": "tel-1", "metrics": {"cpu.usage": 0.5}, "source": "x$y"})
    assert surely_storable(raw, max_depth=64)
