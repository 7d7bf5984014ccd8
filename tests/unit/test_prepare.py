"""Specification of worker.pipeline.prepare and its use in the batch: every record ends as a document or a dead letter."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from schemas.documents import incident_document
from schemas.events import IncidentEvent
from tests.support.events import EventFactory
from tests.support.pipeline import INC, Pipeline, letters_summary, make_pipeline, record
from tests.support.routes import TOPICS
from worker.dead_letters.headers import ERROR_TYPE_UNPROCESSABLE
from worker.pipeline.prepare import Ready, Rejected, prepare
from worker.settings import RouteName, Settings

INCIDENTS_DLQ = f"{TOPICS[RouteName.INCIDENTS]}.dlq"


@pytest.fixture
def pipeline(fast_settings: Settings) -> Pipeline:
    return make_pipeline(fast_settings)


def incident(**changes: Any) -> dict[str, Any]:
    return {**EventFactory(seed=21).incident(), **changes}


def prepared(pipeline: Pipeline, value: bytes | None, headers: Any = (), **limits: Any) -> Ready | Rejected:
    route = pipeline.routes[TOPICS[RouteName.INCIDENTS]]
    limits = {"max_bytes": 1_048_576, "max_depth": 64} | limits
    return prepare(route, value, headers, **limits)


def refusal(pipeline: Pipeline, value: bytes | None, headers: Any = (), **limits: Any) -> Rejected:
    outcome = prepared(pipeline, value, headers, **limits)
    assert isinstance(outcome, Rejected), outcome
    return outcome


async def process_between_good_ones(pipeline: Pipeline, bad: bytes, **extra: Any) -> list[Any]:
    """Process good, bad, good on the incidents topic; return the documents written."""
    result = await pipeline.process(
        record(RouteName.INCIDENTS, 0, incident(event_id="good-0")),
        record(RouteName.INCIDENTS, 1, bad, key=b"bad", **extra),
        record(RouteName.INCIDENTS, 2, incident(event_id="good-2")),
    )
    assert result.commits == {INC: 3}
    return pipeline.writers[RouteName.INCIDENTS].documents


# The two defects of the issue, through the batch


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_timestamp_outside_the_years_once_in_utc_is_dead_lettered_not_raised(
    pipeline: Pipeline, timestamp: str
) -> None:
    """An incident whose instant falls before year 1 or after 9999 in UTC is dead-lettered; its neighbours are stored."""
    written = await process_between_good_ones(pipeline, orjson.dumps(incident(timestamp=timestamp)))
    assert [document["_id"] for document in written] == ["good-0", "good-2"]
    assert letters_summary(pipeline.dead_letters.letters) == [
        (INC.topic, 0, 1, INCIDENTS_DLQ, "validation", "schema_violation")
    ]
    assert "timestamp" in pipeline.dead_letters.letters[0].message


async def test_an_integer_beyond_64_bits_is_dead_lettered_not_stored_as_a_float(pipeline: Pipeline) -> None:
    """A 23-digit integer is refused as unstorable_number, never written as the float 1e+23."""
    bad = b'{"workflow_id": "wf-1", "type": "t", "severity": "LOW", "timestamp": "2026-11-25T10:00:00Z",'
    bad += b' "details": {"count": 99999999999999999999999}}'
    written = await process_between_good_ones(pipeline, bad)
    assert [document["_id"] for document in written] == ["good-0", "good-2"]
    assert letters_summary(pipeline.dead_letters.letters) == [
        (INC.topic, 0, 1, INCIDENTS_DLQ, "validation", "unstorable_number")
    ]


# Anything unforeseen: an `unprocessable` dead letter naming the exception


async def test_an_unexpected_exception_while_building_becomes_an_unprocessable_dead_letter(
    pipeline: Pipeline,
) -> None:
    """A document builder that raises dead-letters that record alone, with x-error-class and an error log with the stack."""
    route = pipeline.routes[INC.topic]

    def builder(event: IncidentEvent) -> Mapping[str, Any]:
        if event.type == "boom":
            raise ZeroDivisionError("division by zero")
        return incident_document(event)

    pipeline.routes[INC.topic] = dataclasses.replace(route, to_document=builder)
    with capture_logs() as logs:
        written = await process_between_good_ones(
            pipeline, orjson.dumps(incident(type="boom")), headers=(("event_id", b"ev-boom"),)
        )
    assert [document["_id"] for document in written] == ["good-0", "good-2"]
    [letter] = pipeline.dead_letters.letters
    headers = dict(letter.headers())
    assert headers["x-error-type"] == ERROR_TYPE_UNPROCESSABLE.encode()
    assert headers["x-error-reason"] == b"unexpected_error"
    assert headers["x-error-class"] == b"builtins.ZeroDivisionError"
    [line] = [entry for entry in logs if entry["event"] == "event_rejected"]
    assert line["log_level"] == "error"
    assert line["error_class"] == "builtins.ZeroDivisionError"
    assert isinstance(line["exc_info"], ZeroDivisionError)
    assert line["exc_info"].__traceback__ is not None, "the stack is kept for the log renderer"


async def test_a_document_bson_cannot_encode_is_refused_in_preparation_for_that_record_alone(
    pipeline: Pipeline,
) -> None:
    """A built document holding what BSON cannot encode is dead-lettered as unstorable_document; nothing else is."""
    route = pipeline.routes[INC.topic]

    def builder(event: IncidentEvent) -> Mapping[str, Any]:
        document = dict(incident_document(event))
        if event.type == "odd":
            document["tags"] = {"a", "b"}  # a set: BSON has no such type
        return document

    pipeline.routes[INC.topic] = dataclasses.replace(route, to_document=builder)
    written = await process_between_good_ones(
        pipeline, orjson.dumps(incident(type="odd", details={"price": "$5"}))
    )
    assert [document["_id"] for document in written] == ["good-0", "good-2"]
    assert letters_summary(pipeline.dead_letters.letters) == [
        (INC.topic, 0, 1, INCIDENTS_DLQ, "validation", "unstorable_document")
    ]


def test_a_document_over_16_mib_of_bson_is_refused_though_its_json_is_allowed(pipeline: Pipeline) -> None:
    """JSON under MAX_EVENT_BYTES whose BSON exceeds 16 MiB (a long array of zeros) is refused as unstorable_document."""
    value = orjson.dumps(incident(details={"zeros": [0] * 1_400_000}))
    assert refusal(pipeline, value, max_bytes=16_000_000).reason == "unstorable_document"


# Numbers: refused from the raw text, kept exactly otherwise


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        (b"9223372036854775808", "unstorable_number"),
        (b"-9223372036854775809", "unstorable_number"),
        (b"18446744073709551616", "unstorable_number"),
        (b"9" * 5000, "unstorable_number"),
        (b"1e400", "unstorable_number"),
        (b"-1e400", "unstorable_number"),
    ],
)
def test_numbers_no_bson_type_holds_are_refused(pipeline: Pipeline, literal: bytes, reason: str) -> None:
    """Integers outside 64 bits (however long) and numbers that overflow a double are refused as unstorable_number."""
    value = orjson.dumps(incident(details={"n": 0})).replace(b'"n":0', b'"n":' + literal)
    assert refusal(pipeline, value).reason == reason


@pytest.mark.parametrize(
    "details",
    [
        {"n": 2**63 - 1, "m": -(2**63)},
        {"id": "99999999999999999999999"},
        {"x": 1.2345678901234567e300, "note": 'quoted "12345678901234567890123" digits'},
    ],
)
def test_numbers_that_fit_and_long_digit_runs_in_text_are_kept_exactly(
    pipeline: Pipeline, details: dict[str, Any]
) -> None:
    """The int64 bounds, long digit runs inside strings and large doubles pass unchanged."""
    outcome = prepared(pipeline, orjson.dumps(incident(details=details)))
    assert isinstance(outcome, Ready), outcome
    assert outcome.document["details"] == details


def test_nesting_past_the_parsers_own_limit_is_refused_as_too_deep(pipeline: Pipeline) -> None:
    """JSON nested 2,000 levels (past orjson's limit) is refused as too_deep, not as not_json."""
    value = b'{"a":' * 2000 + b"1" + b"}" * 2000
    assert refusal(pipeline, value).reason == "too_deep"


# Headers: read without raising


@pytest.mark.parametrize(
    ("headers", "event_id"),
    [
        ((("event_id", b"\xff\xfeid"),), "\ufffd\ufffdid"),
        ((("event_id", None),), None),
        ((("other", b"x"), ("event_id", b"ok")), "ok"),
        ((), None),
    ],
)
def test_the_event_id_header_is_read_whatever_its_bytes(
    pipeline: Pipeline, headers: Any, event_id: str | None
) -> None:
    """A non-UTF-8 or null `event_id` header never raises; the refusal carries what can be read of it."""
    assert refusal(pipeline, b"{oops", headers).event_id == event_id


async def test_a_bad_record_with_unreadable_headers_is_dead_lettered_with_them(pipeline: Pipeline) -> None:
    """A bad record whose event_id header is not UTF-8 is dead-lettered like any other; nothing raises."""
    headers = (("event_id", b"\xc3\x28"), ("trace", b"\x00\xff"))
    await process_between_good_ones(pipeline, b"{oops", headers=headers)
    [letter] = pipeline.dead_letters.letters
    assert (letter.reason, dict(letter.headers())["trace"]) == ("not_json", b"\x00\xff")


def test_a_refusal_after_parsing_names_the_payloads_event_id(pipeline: Pipeline) -> None:
    """A record refused for a number or a key still carries the event_id its payload claims."""
    value = orjson.dumps(incident(event_id="ev-7", details={"n": 0})).replace(b'"n":0', b'"n":1' + b"0" * 22)
    assert (refusal(pipeline, value).reason, refusal(pipeline, value).event_id) == (
        "unstorable_number",
        "ev-7",
    )
