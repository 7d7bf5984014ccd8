"""Poison records generated with hypothesis, deterministically (derandomized, no example
database), each built to trigger one dead-letter reason of worker/pipeline/decode.py:

    too_large          a good event padded past MAX_EVENT_BYTES
    too_deep           a good event carrying JSON nested deeper than MAX_NESTING_DEPTH
    not_utf8           a good event whose text holds bytes that are not UTF-8
    forbidden_key      a `$`-prefixed key, or a key holding NUL, at some depth
    not_json           an object that never closes
    not_object         a JSON scalar or array
    empty_value        no bytes at all
    unstorable_number  an integer in [2^63, 2^64) (JSON allows it, BSON cannot hold it)
    schema_violation   a required field missing or of the wrong JSON type

and, written out by hand on every route (`edge_poison`), the edges where parsers give way:
timestamps at the ends of the representable range whose zone takes them beyond it once
normalised to UTC (year 0 and year 10000), a value of 1.5 MB (over MAX_EVENT_BYTES and over
Kafka's default 1 MiB message limit, so its dead letter must be cut down to be sent), integers
of 23 digits (orjson reads them as floats, silently rounded), and broken UTF-8 (in a key, an
overlong encoding, a sequence cut short at the end, a lone surrogate escape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.events import EventFactory
from worker.settings import RouteName

REQUIRED = {
    RouteName.VALIDATION: ("plan_id", "validation_result", "timestamp"),
    RouteName.RESULTS: (
        "workflow_id",
        "plan_id",
        "intent_id",
        "status",
        "metrics",
        "tickets_summary",
        "sla_status",
        "consolidated_at",
    ),
    RouteName.INCIDENTS: ("workflow_id", "type", "details", "timestamp", "severity"),
    RouteName.TELEMETRY: ("correlation", "metrics", "timestamp", "source"),
}
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82")
WRONG_TYPES = st.one_of(
    st.integers(-5, 5), st.booleans(), st.none(), st.lists(st.integers(-5, 5), max_size=2)
)
KEY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@dataclass(frozen=True, slots=True)
class Poison:
    route: RouteName
    reason: str | None
    """The `x-error-reason` it must be dead-lettered with; None: any (still `validation`)."""
    value: bytes


def _base(route: RouteName) -> dict[str, Any]:
    return EventFactory(seed=3).good(route)


def _nest(depth: int, as_list: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


def _at_depth(depth: int, key: str, leaf: Any) -> dict[str, Any]:
    """`{key: leaf}` placed `depth` objects below the top."""
    value: dict[str, Any] = {key: leaf}
    for _ in range(depth):
        value = {"n": value}
    return value


@st.composite
def poison(draw: st.DrawFn, *, max_bytes: int, max_depth: int) -> Poison:
    route = draw(st.sampled_from(list(RouteName)))
    event = _base(route)
    reason = draw(st.sampled_from([
        "too_large", "too_deep", "not_utf8", "forbidden_key", "forbidden_key", "not_json", "not_object",
        "empty_value", "unstorable_number", "schema_violation", "schema_violation",
    ]))  # fmt: skip
    if reason == "too_large":
        event["padding"] = draw(st.characters(codec="ascii", min_codepoint=32)) * draw(
            st.integers(max_bytes, 4 * max_bytes)
        )
        value = orjson.dumps(event)
    elif reason == "too_deep":
        event["nested"] = _nest(draw(st.integers(max_depth, max_depth + 60)), draw(st.booleans()))
        value = orjson.dumps(event)
    elif reason == "not_utf8":
        text = draw(
            st.text(st.characters(codec="ascii", min_codepoint=32, exclude_characters='"\\'), max_size=6)
        )
        value = (
            orjson.dumps(event)[:-1] + b',"note":"' + text.encode() + draw(st.sampled_from(BAD_UTF8)) + b'"}'
        )
    elif reason == "forbidden_key":
        if draw(st.booleans()):
            key = "$" + draw(KEY_TEXT)
        else:
            prefix, suffix = draw(KEY_TEXT), draw(KEY_TEXT)
            key = f"{prefix}\x00{suffix}"
        event["extra"] = _at_depth(draw(st.integers(0, 5)), key, draw(WRONG_TYPES))
        value = orjson.dumps(event)
    elif reason == "not_json":
        tail = draw(st.text(st.characters(codec="utf-8", exclude_characters="}", exclude_categories=("Cs",))))
        value = b'{"a":' + tail.encode()
    elif reason == "not_object":
        scalar = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False),
                           st.text(max_size=20), st.booleans(), st.none())  # fmt: skip
        value = orjson.dumps(draw(st.one_of(scalar, st.lists(scalar, max_size=5))))
    elif reason == "empty_value":
        value = b""
    elif reason == "unstorable_number":
        number = draw(st.integers(2**63, 2**64 - 1))
        value = orjson.dumps(event)[:-1] + b',"counter":' + str(number).encode() + b"}"
    else:
        field = draw(st.sampled_from(REQUIRED[route]))
        if draw(st.booleans()):
            del event[field]
        else:
            event[field] = draw(WRONG_TYPES)
        value = orjson.dumps(event)
    return Poison(route, reason, value)


def generate_poison(count: int, *, max_bytes: int, max_depth: int) -> list[Poison]:
    """`count` poison records (fewer only if hypothesis runs out of distinct examples), the
    same ones on every run: hypothesis is derandomized and keeps no example database."""
    found: list[Poison] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(poison(max_bytes=max_bytes, max_depth=max_depth))
    def collect(record: Poison) -> None:
        found.append(record)

    collect()
    return found


TIMESTAMP_FIELD = {
    RouteName.VALIDATION: "timestamp",
    RouteName.RESULTS: "consolidated_at",
    RouteName.INCIDENTS: "timestamp",
    RouteName.TELEMETRY: "timestamp",
}
BEYOND_RANGE = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
"""Valid ISO-8601 instants whose UTC time (year 0, year 10000) no datetime can hold."""
OVERSIZE_BYTES = 1_500_000
HUGE_INTEGERS = (b"12345678901234567890123", b"-98765432109876543210987")
FREE_FORM = {
    RouteName.VALIDATION: "validation_result",
    RouteName.RESULTS: "metrics",
    RouteName.INCIDENTS: "details",
    RouteName.TELEMETRY: "metrics",
}
"""The object each route stores as it came: a number in it would be stored rounded."""


def _with_huge_integer(route: RouteName, event: dict[str, Any], digits: bytes) -> bytes:
    free = FREE_FORM[route]
    marked = orjson.dumps({**event, free: {**event[free], "counter": "<huge>"}})
    return marked.replace(b'"<huge>"', digits)


def _with_raw(event: dict[str, Any], fragment: bytes) -> bytes:
    """The event's JSON with `fragment` (raw bytes, one or more members) added at the end."""
    return orjson.dumps(event)[:-1] + b"," + fragment + b"}"


def edge_poison(route: RouteName) -> list[Poison]:
    """The hand-written edge cases of the module docstring, for one route."""
    event = _base(route)
    cases = [Poison(route, None, orjson.dumps({**event, TIMESTAMP_FIELD[route]: moment}))
             for moment in BEYOND_RANGE]  # fmt: skip
    padding = "x" * (OVERSIZE_BYTES - len(orjson.dumps(event)))
    cases.append(Poison(route, "too_large", orjson.dumps({**event, "padding": padding})))
    cases += [Poison(route, "unstorable_number", _with_huge_integer(route, event, n)) for n in HUGE_INTEGERS]
    cases += [
        Poison(route, "not_utf8", _with_raw(event, b'"ke\xffy":1')),
        Poison(route, "not_utf8", _with_raw(event, b'"note":"slash \xc0\xaf overlong"')),
        Poison(route, "not_utf8", _with_raw(event, b'"note":"cut \xe2\x82"')),
        Poison(route, None, _with_raw(event, b'"note":"lone \\ud800 surrogate"')),
    ]
    return cases
