"""The bad-input catalogue: every class of awkward input, published between good events to a running worker.

Each class must end exactly one way: stored, or dead-lettered once with its reason; every good
neighbour must be stored. The test renders the outcomes as the table of docs/reliability.md
("## Bad-input catalogue"): with CATALOGUE_REPORT=docs/reliability.md it rewrites the part
between the markers, and in every run it checks that the committed table is what it saw.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.generated_blocks import write_when_asked
from tests.integration.harness import (
    Outgoing,
    committed_offsets,
    prepare_topics,
    publish_records,
    read_topic,
    running_worker,
    settings_for,
    wait_until,
)
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from worker.settings import RouteName, Settings

DOC = Path(__file__).parents[2] / "docs" / "reliability.md"
START, END = "<!-- bad-input-catalogue:start -->", "<!-- bad-input-catalogue:end -->"
STORED = "stored"
VAL, RES, INC, TEL = RouteName.VALIDATION, RouteName.RESULTS, RouteName.INCIDENTS, RouteName.TELEMETRY
factory = EventFactory(seed=41)


@dataclass(frozen=True)
class Case:
    name: str
    route: RouteName
    what: str
    value: bytes | None
    expected: str
    """`stored`, or the `x-error-reason` of its dead letter."""
    headers: tuple[tuple[str, bytes], ...] = ()


def event(route: RouteName, name: str, **changes: Any) -> dict[str, Any]:
    """A valid event of `route` with `changes`; the event id names the class."""
    return {**factory.good(route), "event_id": f"cat-{name}", **changes}


def with_literal(route: RouteName, name: str, field: str, literal: bytes) -> bytes:
    """A valid event whose free-form object `field` holds `{"n": <literal>}`, written as it is."""
    raw = orjson.dumps(event(route, name, **{field: {"n": "@@"}}))
    return raw.replace(b'"@@"', literal)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"child": value}
    return value


def case(name: str, route: RouteName, what: str, value: bytes | dict[str, Any] | None, expected: str) -> Case:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return Case(name, route, what, raw, expected)


def without(route: RouteName, name: str, *fields: str) -> dict[str, Any]:
    value = event(route, name)
    for field in fields:
        value.pop(field)
    return value


CATALOGUE: list[Case] = [
    # Instants
    case("year1_offset", INC, "`timestamp` `0001-01-01T00:00:00+01:00` (before year 1 in UTC)",
         event(INC, "year1_offset", timestamp="0001-01-01T00:00:00+01:00"), "schema_violation"),
    case("year9999_offset", INC, "`timestamp` `9999-12-31T23:59:59-01:00` (after year 9999 in UTC)",
         event(INC, "year9999_offset", timestamp="9999-12-31T23:59:59-01:00"), "schema_violation"),
    case("result_year1_offset", RES, "`consolidated_at` `0001-01-01T00:30:00+01:00`",
         event(RES, "result_year1_offset", consolidated_at="0001-01-01T00:30:00+01:00"), "schema_violation"),
    case("year1_utc", TEL, "`timestamp` `0001-01-01T00:00:00Z` (the first instant)",
         event(TEL, "year1_utc", timestamp="0001-01-01T00:00:00Z"), STORED),
    case("offset_normalised", VAL, "`timestamp` `2026-11-25T23:30:00-05:00` (stored in UTC)",
         event(VAL, "offset_normalised", timestamp="2026-11-25T23:30:00-05:00"), STORED),
    case("no_zone", INC, "`timestamp` without a zone", event(INC, "no_zone", timestamp="2026-11-25T10:00:00"),
         "schema_violation"),
    case("epoch_number", VAL, "`timestamp` as epoch seconds", event(VAL, "epoch_number", timestamp=1764064800),
         "schema_violation"),
    case("not_a_date", TEL, "`timestamp` `2026-13-45T99:00:00Z`",
         event(TEL, "not_a_date", timestamp="2026-13-45T99:00:00Z"), "schema_violation"),
    # Numbers
    case("int_23_digits", INC, "integer `99999999999999999999999` in `details`",
         with_literal(INC, "int_23_digits", "details", b"99999999999999999999999"), "unstorable_number"),
    case("int_2_63", TEL, "integer 2^63 in `metrics`", with_literal(TEL, "int_2_63", "metrics", b"9223372036854775808"),
         "unstorable_number"),
    case("int_below_min", RES, "integer -2^63-1 in `metrics`",
         with_literal(RES, "int_below_min", "metrics", b"-9223372036854775809"), "unstorable_number"),
    case("int_5000_digits", VAL, "integer of 5,000 digits in `validation_result`",
         orjson.dumps(event(VAL, "int_5000_digits", validation_result={"valid": True, "n": "@@"})).replace(
             b'"@@"', b"9" * 5000), "unstorable_number"),
    case("int64_max", INC, "integer 2^63-1 in `details` (stored exactly)",
         with_literal(INC, "int64_max", "details", b"9223372036854775807"), STORED),
    case("float_1e400", TEL, "number `1e400` in `metrics`", with_literal(TEL, "float_1e400", "metrics", b"1e400"),
         "unstorable_number"),
    case("float_1e308", TEL, "number `1e308` in `metrics`", with_literal(TEL, "float_1e308", "metrics", b"1e308"),
         STORED),
    case("nan_literal", INC, "`NaN` literal", with_literal(INC, "nan_literal", "details", b"NaN"), "not_json"),
    case("infinity_literal", RES, "`Infinity` literal", with_literal(RES, "infinity_literal", "metrics", b"Infinity"),
         "not_json"),
    case("digits_in_string", INC, "23 digits inside a string (stored as text)",
         event(INC, "digits_in_string", details={"n": "99999999999999999999999"}), STORED),
    # Text and encoding
    case("broken_utf8", INC, "bytes `\\xff\\xfe` inside a string", b'{"workflow_id": "\xff\xfe"}', "not_utf8"),
    case("lone_surrogate", TEL, "escape `\\ud800` without its pair",
         orjson.dumps(event(TEL, "lone_surrogate", source="@@")).replace(b'"@@"', b'"\\ud800"'), "not_json"),
    case("utf8_bom", VAL, "UTF-8 byte order mark before the object",
         b"\xef\xbb\xbf" + orjson.dumps(event(VAL, "utf8_bom")), "not_json"),
    case("nul_in_value", INC, "NUL character inside a string value",
         event(INC, "nul_in_value", details={"note": "a\x00b"}), STORED),
    case("astral_text", TEL, "emoji and astral-plane characters in keys and values",
         event(TEL, "astral_text", metrics={"\U0001f600.rate": 1, "label": "\U00010348"}), STORED),
    # Shape
    case("empty_value", INC, "empty value", b"", "empty_value"),
    case("null_value", RES, "no value (tombstone)", None, "empty_value"),
    case("array", VAL, "a JSON array", b"[1, 2]", "not_object"),
    case("scalar", TEL, "a JSON string", b'"text"', "not_object"),
    case("truncated", INC, "JSON that stops half-way", orjson.dumps(event(INC, "truncated"))[:40], "not_json"),
    case("trailing_garbage", RES, "an object followed by more text",
         orjson.dumps(event(RES, "trailing_garbage")) + b" x", "not_json"),
    case("oversize", INC, "1.5 MB value (over MAX_EVENT_BYTES)",
         event(INC, "oversize", details={"x": "y" * 1_500_000}), "too_large"),
    case("deep_65", TEL, "`metrics` nested 65 levels (over MAX_NESTING_DEPTH)",
         event(TEL, "deep_65", metrics=nested(65)), "too_deep"),
    case("deep_2000", INC, "2,000 levels (past the parser's own limit)",
         b'{"a":' * 2000 + b"1" + b"}" * 2000, "too_deep"),
    case("dollar_key", INC, "`$gt` key inside `details`", event(INC, "dollar_key", details={"a": {"$gt": 1}}),
         "forbidden_key"),
    case("escaped_dollar_key", RES, "key `\\u0024where` (an escaped `$`)",
         orjson.dumps(event(RES, "escaped_dollar_key", metrics={"@@": 1})).replace(b'"@@"', b'"\\u0024where"'),
         "forbidden_key"),
    case("nul_key", TEL, "key holding NUL in `metrics`", event(TEL, "nul_key", metrics={"a\x00b": 1}),
         "forbidden_key"),
    case("dotted_key", TEL, "dotted key `cpu.usage` (legal)", event(TEL, "dotted_key", metrics={"cpu.usage": 0.5}),
         STORED),
    case("unknown_field", VAL, "an unknown top-level field (ignored)", event(VAL, "unknown_field", extra={"a": 1}),
         STORED),
    # Contract, per field
    case("missing_workflow_id", INC, "`workflow_id` missing", without(INC, "missing_workflow_id", "workflow_id"),
         "schema_violation"),
    case("workflow_id_int", INC, "`workflow_id` a number", event(INC, "workflow_id_int", workflow_id=7),
         "schema_violation"),
    case("empty_type", INC, "`type` empty", event(INC, "empty_type", type=""), "schema_violation"),
    case("details_list", INC, "`details` a list", event(INC, "details_list", details=[1]), "schema_violation"),
    case("unknown_severity", INC, "`severity` `meh`", event(INC, "unknown_severity", severity="meh"),
         "schema_violation"),
    case("severity_any_case", INC, "`severity` `hIgH` (stored upper-case)",
         event(INC, "severity_any_case", severity="hIgH"), STORED),
    case("missing_valid", VAL, "`validation_result` without `valid`",
         event(VAL, "missing_valid", validation_result={"score": 1}), "schema_violation"),
    case("valid_string", VAL, "`validation_result.valid` `\"true\"`",
         event(VAL, "valid_string", validation_result={"valid": "true"}), "schema_violation"),
    case("plan_id_int", VAL, "`plan_id` a number", event(VAL, "plan_id_int", plan_id=7), "schema_violation"),
    case("negative_violations", RES, "`sla_status.violations_count` -1",
         event(RES, "negative_violations", sla_status={"violations_count": -1}), "schema_violation"),
    case("violations_string", RES, "`sla_status.violations_count` `\"0\"`",
         event(RES, "violations_string", sla_status={"violations_count": "0"}), "schema_violation"),
    case("violations_float", RES, "`sla_status.violations_count` 1.5",
         event(RES, "violations_float", sla_status={"violations_count": 1.5}), "schema_violation"),
    case("missing_sla_status", RES, "`sla_status` missing", without(RES, "missing_sla_status", "sla_status"),
         "schema_violation"),
    case("empty_status", RES, "`status` empty", event(RES, "empty_status", status=""), "schema_violation"),
    case("status_any_case", RES, "`status` `completed` (stored upper-case)",
         event(RES, "status_any_case", status="completed"), STORED),
    case("correlation_string", TEL, "`correlation` a string", event(TEL, "correlation_string", correlation="wf"),
         "schema_violation"),
    case("correlation_no_workflow", TEL, "`correlation` without `workflow_id`",
         event(TEL, "correlation_no_workflow", correlation={"plan_id": "p"}), "schema_violation"),
    case("missing_source", TEL, "`source` missing", without(TEL, "missing_source", "source"), "schema_violation"),
    case("metrics_null", TEL, "`metrics` null", event(TEL, "metrics_null", metrics=None), "schema_violation"),
    Case("header_not_utf8", INC, "unreadable value with an `event_id` header that is not UTF-8", b"{oops",
         "not_json", headers=(("event_id", b"\xff\xfe"),)),
]  # fmt: skip


def document_id(case: Case) -> str:
    assert case.value is not None
    value = orjson.loads(case.value)
    return str(value["workflow_id"] if case.route is RES else value["event_id"])


async def publish_catalogue(settings: Settings) -> dict[RouteName, list[Any]]:
    """Per route: good, bad, good, bad, ..., good on one partition; return the good events published."""
    goods: dict[RouteName, list[Any]] = {}
    for route in RouteName:
        cases = [c for c in CATALOGUE if c.route is route]
        goods[route] = [factory.good(route) for _ in range(len(cases) + 1)]
        records: list[Outgoing] = [(b"good-0", orjson.dumps(goods[route][0]), ())]
        for index, bad in enumerate(cases, start=1):
            records.append((bad.name.encode(), bad.value, bad.headers))  # type: ignore[arg-type]
            records.append((f"good-{index}".encode(), orjson.dumps(goods[route][index]), ()))
        await publish_records(settings.kafka_bootstrap_servers, settings.topic_for(route), records)
    return goods


async def all_committed(settings: Settings) -> bool:
    for route in RouteName:
        published = 2 * sum(1 for c in CATALOGUE if c.route is route) + 1
        if (await committed_offsets(settings, settings.topic_for(route), 1))[0] != published:
            return False
    return True


async def observe(settings: Settings, mongo_db: Any) -> dict[str, str]:
    """The outcome of each class: `stored`, `dead-lettered: <type> / <reason>`, or both/none (a failure)."""
    outcomes: dict[str, list[str]] = {c.name: [] for c in CATALOGUE}
    for route in RouteName:
        for record in await read_topic(
            settings.kafka_bootstrap_servers, settings.dlq_topic(settings.topic_for(route))
        ):
            headers = {key: value.decode() for key, value in record.headers if key.startswith("x-")}
            outcomes[record.key.decode()].append(
                f"dead-lettered `{headers['x-error-type']}` / `{headers['x-error-reason']}`"
            )
    for case in CATALOGUE:
        if case.expected == STORED and await mongo_db[COLLECTION[case.route]].find_one(
            {"_id": document_id(case)}
        ):
            outcomes[case.name].append(STORED)
    return {name: " + ".join(found) or "lost" for name, found in outcomes.items()}


def expected_outcome(case: Case) -> str:
    return STORED if case.expected == STORED else f"dead-lettered `validation` / `{case.expected}`"


def catalogue_table(outcomes: dict[str, str]) -> str:
    lines = [
        START,
        "_Written by `CATALOGUE_REPORT=docs/reliability.md .venv/bin/pytest "
        "tests/integration/test_bad_input_catalogue.py`; every run of that test checks this table._",
        "",
        "| # | route | class | input | outcome |",
        "|---:|---|---|---|---|",
    ]
    for number, case in enumerate(CATALOGUE, start=1):
        what = case.what.replace("|", "\\|")
        lines.append(f"| {number} | {case.route.value} | {case.name} | {what} | {outcomes[case.name]} |")
    return "\n".join([*lines, END])


def write_report(table: str) -> None:
    """Rewrite the catalogue of the file CATALOGUE_REPORT names, if set."""
    write_when_asked("CATALOGUE_REPORT", table, start=START, end=END, heading="## Bad-input catalogue")


def committed_doc() -> str:
    return DOC.read_text()


async def test_every_bad_input_class_is_dead_lettered_once_with_its_reason_and_good_ones_are_stored(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any
) -> None:
    """Each catalogued class is stored or dead-lettered exactly once with its expected reason; its good neighbours are stored."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    await prepare_topics(create_topics, settings, partitions=1)
    goods = await publish_catalogue(settings)
    async with running_worker(settings):
        await wait_until(lambda: all_committed(settings), within=120, what="every catalogue record committed")
    outcomes = await observe(settings, mongo_db)
    for route, events in goods.items():
        ids = [event["workflow_id"] if route is RES else event["event_id"] for event in events]
        found = await mongo_db[COLLECTION[route]].count_documents({"_id": {"$in": ids}})
        assert found == len(ids), f"{route.value}: {found} of {len(ids)} good events stored"
    stored = await mongo_db.incidents.find_one({"_id": "cat-int64_max"})
    assert stored["details"]["n"] == 2**63 - 1 and isinstance(stored["details"]["n"], int)
    table = catalogue_table(outcomes)
    write_report(table)
    assert Counter(outcomes.values())["lost"] == 0, {n: o for n, o in outcomes.items() if o == "lost"}
    assert outcomes == {c.name: expected_outcome(c) for c in CATALOGUE}
    assert table in committed_doc(), "docs/reliability.md's catalogue differs: rerun with CATALOGUE_REPORT"


def test_the_catalogue_covers_forty_classes_across_the_four_routes() -> None:
    """The catalogue has at least 40 distinct classes and every route has bad and stored ones."""
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE) >= 40
    for route in RouteName:
        expected = {c.expected == STORED for c in CATALOGUE if c.route is route}
        assert expected == {True, False}, route
