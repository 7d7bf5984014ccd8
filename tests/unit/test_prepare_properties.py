"""Properties of the per-record path on all four routes: a storable document or a reasoned refusal, never a raise.

Inputs are biased toward the edges: instants at the ends of the range with offsets, integers
and floats at and beyond 64 bits, lone surrogates (escaped and raw), deep nesting, long
strings, `$`/`.`/NUL keys, wrong types and missing fields. Valid events from the demo factory
are mutated one field at a time, so the property reaches the validators and document builders,
not only the JSON parser. JSON text is written by hand (`to_json`) because orjson cannot write
integers beyond 64 bits, lone surrogates or number literals such as 1e400.
"""

from __future__ import annotations

import json
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.events import EventFactory
from tests.support.pipeline import make_pipeline
from tests.support.routes import TOPICS
from worker.dead_letters.headers import ERROR_TYPE_VALIDATION
from worker.pipeline.prepare import Ready, Rejected, prepare
from worker.pipeline.routes import Route
from worker.settings import RouteName, Settings

MAX_BYTES = 40_000
MAX_DEPTH = 16
REASONS = {
    "empty_value", "too_large", "not_utf8", "not_json", "not_object", "too_deep",
    "forbidden_key", "unstorable_number", "unstorable_document", "schema_violation",
}  # fmt: skip
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Raw(str):
    """A number literal written into the JSON text as it is (1e400, 99999999999999999999999)."""

    __slots__ = ()


def to_json(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text of `value`: exact big integers, Raw literals unquoted, lone surrogates kept."""
    raws: list[str] = []

    def mark(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(str(node))
            return f"\x01raw{len(raws) - 1}\x01"
        if isinstance(node, dict):
            return {key: mark(child) for key, child in node.items()}
        if isinstance(node, list):
            return [mark(child) for child in node]
        return node

    text = json.dumps(mark(value), ensure_ascii=ascii_only, allow_nan=True)
    for index, literal in enumerate(raws):
        quoted = json.dumps(f"\x01raw{index}\x01", ensure_ascii=ascii_only)
        text = text.replace(quoted, literal, 1)
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes invalid UTF-8


def instants() -> st.SearchStrategy[str]:
    """ISO-8601 strings, half of them at the ends of the range with an offset that crosses it."""
    dates = st.sampled_from(["0001-01-01", "9999-12-31"]) | st.sampled_from(
        ["0001-01-02", "1970-01-01", "2026-11-25", "9999-12-30"]
    )
    times = st.sampled_from(["T00:00:00", "T23:59:59.999999"]) | st.sampled_from(
        ["T12:00", " 00:00:00", "T24:00:00"]
    )
    zones = st.sampled_from(["+01:00", "-01:00", "+23:59", "-23:59"]) | st.sampled_from(
        ["Z", "+00:00", "", "z", "+0100", "+24:00"]
    )
    return st.builds(lambda d, t, z: d + t + z, dates, times, zones)


edge_ints = st.sampled_from(
    [0, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 10**23]
)
edge_floats = (
    st.sampled_from([0.0, -0.0, 1e308, 5e-324, float("nan"), float("inf"), float("-inf")]) | st.floats()
)
raw_numbers = st.sampled_from(
    ["1e400", "-1e400", "1e-400", "99999999999999999999999", "9" * 400, "1.5E+3"]
).map(Raw)
lone_surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d"])
edge_text = (
    st.text(max_size=12)
    | lone_surrogates
    | instants()
    | st.sampled_from(["", "\x00", "$gt", "a.b", "\ufeff", "low", "HIGH", "critical", "Meh"])
    | st.sampled_from([0, 1, 30_000, 50_000]).map(lambda n: "x" * n)
)
edge_keys = (
    st.text(max_size=6)
    | lone_surrogates
    | st.sampled_from(["$where", "$", "a.b", "a\x00b", "", "_id", "valid"])
)
scalars = st.none() | st.booleans() | edge_ints | st.integers() | edge_floats | raw_numbers | edge_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(edge_keys, children, max_size=4),
    max_leaves=20,
)


def deeply(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"d": [value]}
    return value


mutations = json_values | st.builds(deeply, json_values, st.integers(min_value=5, max_value=12))

FIELDS: dict[RouteName, list[tuple[str, ...]]] = {
    RouteName.VALIDATION: [("event_id",), ("plan_id",), ("workflow_id",), ("validation_result",),
                           ("validation_result", "valid"), ("validation_result", "score"), ("timestamp",)],
    RouteName.RESULTS: [("event_id",), ("workflow_id",), ("plan_id",), ("intent_id",), ("status",), ("metrics",),
                        ("metrics", "duration_ms"), ("tickets_summary",), ("sla_status",),
                        ("sla_status", "violations_count"), ("consolidated_at",)],
    RouteName.INCIDENTS: [("event_id",), ("workflow_id",), ("type",), ("details",), ("details", "attempt"),
                          ("timestamp",), ("severity",)],
    RouteName.TELEMETRY: [("event_id",), ("correlation",), ("correlation", "workflow_id"),
                          ("correlation", "plan_id"), ("metrics",), ("metrics", "cpu.usage"), ("timestamp",),
                          ("source",)],
}  # fmt: skip
DELETE = object()


@pytest.fixture(scope="module")
def routes() -> dict[RouteName, Route]:
    pipeline = make_pipeline(Settings())
    return {name: pipeline.routes[TOPICS[name]] for name in RouteName}


def assert_total(route: Route, raw: bytes | None, headers: Any = ()) -> Ready | Rejected:
    """The property: a document BSON encodes, or a validation refusal with a known reason."""
    outcome = prepare(route, raw, headers, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)
    if isinstance(outcome, Ready):
        bson.encode(outcome.document)
    else:
        assert outcome.error is None, f"unforeseen {outcome.detail}"
        assert (outcome.error_type, outcome.reason in REASONS) == (ERROR_TYPE_VALIDATION, True), outcome
    return outcome


def mutate(event: dict[str, Any], path: tuple[str, ...], new: Any) -> dict[str, Any]:
    """A copy of `event` with the field at `path` replaced by `new` (or removed for DELETE)."""
    event = json.loads(json.dumps(event))
    parent = event
    for part in path[:-1]:
        if not isinstance(parent.get(part), dict):
            parent[part] = {}
        parent = parent[part]
    if new is DELETE:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = new
    return event


headers = st.lists(
    st.tuples(st.sampled_from(["event_id", "trace"]), st.none() | st.binary(max_size=8)), max_size=2
)


@PROPERTY
@given(name=st.sampled_from(list(RouteName)), raw=st.none() | st.binary(max_size=300), headers=headers)
def test_any_bytes_and_headers_end_in_a_document_or_a_refusal(
    routes: dict[RouteName, Route], name: RouteName, raw: bytes | None, headers: Any
) -> None:
    """Arbitrary bytes (or none) with arbitrary headers are prepared without raising."""
    assert_total(routes[name], raw, headers)


@PROPERTY
@given(name=st.sampled_from(list(RouteName)), value=mutations, ascii_only=st.booleans())
def test_any_json_text_ends_in_a_document_or_a_refusal(
    routes: dict[RouteName, Route], name: RouteName, value: Any, ascii_only: bool
) -> None:
    """Any JSON-like text (odd keys, huge numbers, surrogates, nesting) is prepared without raising."""
    outcome = assert_total(routes[name], to_json(value, ascii_only=ascii_only))
    if not isinstance(value, dict):
        assert isinstance(outcome, Rejected)


@PROPERTY
@given(
    name=st.sampled_from(list(RouteName)),
    seed=st.integers(min_value=0, max_value=50),
    data=st.data(),
    ascii_only=st.booleans(),
)
def test_a_valid_event_mutated_in_one_field_ends_in_a_document_or_a_refusal(
    routes: dict[RouteName, Route], name: RouteName, seed: int, data: st.DataObject, ascii_only: bool
) -> None:
    """A valid event with one field replaced by an edge value, a wrong type, or removed, is prepared without raising."""
    event = EventFactory(seed=seed).good(name)
    path = data.draw(st.sampled_from(FIELDS[name]), label="field")
    new = data.draw(mutations | instants() | st.just(DELETE), label="value")
    assert_total(routes[name], to_json(mutate(event, path, new), ascii_only=ascii_only))


TIMESTAMPS = {
    RouteName.VALIDATION: "timestamp",
    RouteName.RESULTS: "consolidated_at",
    RouteName.INCIDENTS: "timestamp",
    RouteName.TELEMETRY: "timestamp",
}
FREE_FORM = {
    RouteName.VALIDATION: ("validation_result", "score"),
    RouteName.RESULTS: ("metrics", "duration_ms"),
    RouteName.INCIDENTS: ("details", "attempt"),
    RouteName.TELEMETRY: ("metrics", "latency_ms"),
}


@PROPERTY
@given(name=st.sampled_from(list(RouteName)), seed=st.integers(min_value=0, max_value=50), instant=instants())
def test_an_instant_at_the_ends_of_the_range_ends_in_a_document_or_a_refusal(
    routes: dict[RouteName, Route], name: RouteName, seed: int, instant: str
) -> None:
    """Each route's timestamp near year 1 or 9999, with offsets that cross the range once in UTC, never raises."""
    event = EventFactory(seed=seed).good(name)
    assert_total(routes[name], to_json({**event, TIMESTAMPS[name]: instant}, ascii_only=True))


@PROPERTY
@given(
    name=st.sampled_from(list(RouteName)),
    number=edge_ints | st.integers() | raw_numbers | edge_floats,
)
def test_a_number_in_a_free_form_object_is_stored_exactly_or_refused(
    routes: dict[RouteName, Route], name: RouteName, number: Any
) -> None:
    """An integer in metrics/details/result objects is stored as that very integer, or the record is refused."""
    event = EventFactory(seed=3).good(name)
    outer, inner = FREE_FORM[name]
    outcome = assert_total(routes[name], to_json(mutate(event, (outer, inner), number), ascii_only=True))
    if isinstance(outcome, Ready) and type(number) is int:
        stored = outcome.document[outer][inner]
        assert (type(stored), stored) == (int, number)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(RouteName)), seed=st.integers(min_value=0, max_value=50))
def test_the_factorys_valid_events_become_documents(
    routes: dict[RouteName, Route], name: RouteName, seed: int
) -> None:
    """Unmutated events from the factory are all accepted, so the mutation tests start from valid ground."""
    event = EventFactory(seed=seed).good(name)
    assert isinstance(assert_total(routes[name], to_json(event, ascii_only=False)), Ready)
