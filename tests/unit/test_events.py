"""Specification of the event contracts in schemas.events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import (
    EventModel,
    IncidentEvent,
    Severity,
    TelemetryEvent,
    ValidationEvent,
    WorkflowResultEvent,
)
from tests.support.events import EventFactory
from worker.settings import RouteName

MODELS: dict[RouteName, type[EventModel]] = {
    RouteName.VALIDATION: ValidationEvent,
    RouteName.RESULTS: WorkflowResultEvent,
    RouteName.INCIDENTS: IncidentEvent,
    RouteName.TELEMETRY: TelemetryEvent,
}
REQUIRED: dict[RouteName, tuple[str, ...]] = {
    RouteName.VALIDATION: ("plan_id", "validation_result", "timestamp"),
    RouteName.RESULTS: (
        "workflow_id", "plan_id", "intent_id", "status", "metrics",
        "tickets_summary", "sla_status", "consolidated_at",
    ),
    RouteName.INCIDENTS: ("workflow_id", "type", "details", "timestamp", "severity"),
    RouteName.TELEMETRY: ("correlation", "metrics", "timestamp", "source"),
}  # fmt: skip
TIME_FIELD = {
    RouteName.VALIDATION: "timestamp",
    RouteName.RESULTS: "consolidated_at",
    RouteName.INCIDENTS: "timestamp",
    RouteName.TELEMETRY: "timestamp",
}


def good(route: RouteName) -> dict[str, Any]:
    return EventFactory(seed=3).good(route)


def error_locations(model: type[EventModel], data: dict[str, Any]) -> list[tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [err["loc"] for err in caught.value.errors()]


@pytest.mark.parametrize("route", list(RouteName))
def test_each_model_accepts_a_realistic_event(route: RouteName) -> None:
    """Each topic's model validates an event as the orchestrator publishes it."""
    data = good(route)
    event = MODELS[route].model_validate(data)
    assert event.event_id == data["event_id"]


@pytest.mark.parametrize(
    ("route", "field"), [(route, field) for route, fields in REQUIRED.items() for field in fields]
)
def test_a_missing_required_field_is_rejected_at_that_field(route: RouteName, field: str) -> None:
    """An event without one of its required fields is refused, and the error names that field."""
    data = good(route)
    del data[field]
    assert (field,) in error_locations(MODELS[route], data)


@pytest.mark.parametrize(
    ("route", "field"),
    [
        (RouteName.VALIDATION, "plan_id"),
        (RouteName.VALIDATION, "workflow_id"),
        (RouteName.RESULTS, "workflow_id"),
        (RouteName.RESULTS, "status"),
        (RouteName.INCIDENTS, "type"),
        (RouteName.TELEMETRY, "source"),
        (RouteName.TELEMETRY, "event_id"),
    ],
)
def test_an_int_where_a_string_is_expected_is_rejected(route: RouteName, field: str) -> None:
    """JSON numbers are not coerced into string fields."""
    data = good(route)
    data[field] = 123
    assert (field,) in error_locations(MODELS[route], data)


def test_an_empty_identifier_is_rejected() -> None:
    """Identifiers such as plan_id and event_id must not be empty strings."""
    data = good(RouteName.VALIDATION) | {"plan_id": "", "event_id": ""}
    assert set(error_locations(ValidationEvent, data)) == {("plan_id",), ("event_id",)}


def test_event_id_is_optional() -> None:
    """An event without event_id is valid; its event_id is None."""
    data = good(RouteName.INCIDENTS)
    del data["event_id"]
    assert IncidentEvent.model_validate(data).event_id is None


@pytest.mark.parametrize("count", ["3", 3.0, True, None])
def test_violations_count_must_be_a_json_integer(count: object) -> None:
    """`sla_status.violations_count` accepts neither strings, floats, booleans nor null."""
    data = good(RouteName.RESULTS)
    data["sla_status"] = {"violations_count": count}
    assert ("sla_status", "violations_count") in error_locations(WorkflowResultEvent, data)


def test_negative_violations_count_is_rejected() -> None:
    """A negative `violations_count` is refused."""
    data = good(RouteName.RESULTS)
    data["sla_status"] = {"violations_count": -1}
    assert ("sla_status", "violations_count") in error_locations(WorkflowResultEvent, data)


def test_sla_status_keeps_extra_fields() -> None:
    """Fields of sla_status other than violations_count are kept as received."""
    data = good(RouteName.RESULTS)
    data["sla_status"] = {"violations_count": 2, "deadline_met": False, "breaches": ["step-3"]}
    event = WorkflowResultEvent.model_validate(data)
    assert event.sla_status.model_dump() == data["sla_status"]


def test_correlation_keeps_extra_fields_and_requires_workflow_id() -> None:
    """correlation keeps unknown fields, and is refused without workflow_id."""
    data = good(RouteName.TELEMETRY)
    data["correlation"] = {"workflow_id": "wf-1", "tenant": "acme"}
    event = TelemetryEvent.model_validate(data)
    assert event.correlation.model_dump(exclude_none=True) == {"workflow_id": "wf-1", "tenant": "acme"}
    data["correlation"] = {"plan_id": "plan-1"}
    assert ("correlation", "workflow_id") in error_locations(TelemetryEvent, data)


@pytest.mark.parametrize(("given", "stored"), [("low", "LOW"), ("High", "HIGH"), ("CRITICAL", "CRITICAL")])
def test_severity_is_case_insensitive_and_upper_cased(given: str, stored: str) -> None:
    """Severity is read whatever its case and kept as the upper-case enum member."""
    data = good(RouteName.INCIDENTS) | {"severity": given}
    event = IncidentEvent.model_validate(data)
    assert event.severity is Severity(stored)
    assert event.severity.value == stored


@pytest.mark.parametrize("severity", ["urgent", "", 3])
def test_an_unknown_severity_is_rejected(severity: object) -> None:
    """A severity outside LOW/MEDIUM/HIGH/CRITICAL is refused."""
    data = good(RouteName.INCIDENTS) | {"severity": severity}
    assert ("severity",) in error_locations(IncidentEvent, data)


@pytest.mark.parametrize(("given", "stored"), [("completed", "COMPLETED"), ("Partial", "PARTIAL")])
def test_status_is_upper_cased(given: str, stored: str) -> None:
    """A workflow result's status is stored upper-case."""
    data = good(RouteName.RESULTS) | {"status": given}
    assert WorkflowResultEvent.model_validate(data).status == stored


@pytest.mark.parametrize("route", list(RouteName))
@pytest.mark.parametrize(
    "stamp",
    ["2026-11-25T12:30:00+02:00", "2026-11-25T10:30:00Z", "2026-11-25T05:30:00-05:00"],
)
def test_timestamps_are_normalised_to_utc(route: RouteName, stamp: str) -> None:
    """A timestamp with any zone becomes the same instant expressed in UTC."""
    field = TIME_FIELD[route]
    data = good(route) | {field: stamp}
    value = getattr(MODELS[route].model_validate(data), field)
    assert value.utcoffset() == timedelta(0)
    assert value == datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize("route", list(RouteName))
@pytest.mark.parametrize("stamp", ["2026-11-25T10:30:00", "2026-11-25", "yesterday", ""])
def test_a_timestamp_without_zone_or_unparsable_is_rejected(route: RouteName, stamp: str) -> None:
    """Timestamps must be ISO-8601 instants with an explicit zone."""
    field = TIME_FIELD[route]
    data = good(route) | {field: stamp}
    assert (field,) in error_locations(MODELS[route], data)


@pytest.mark.parametrize("route", list(RouteName))
@pytest.mark.parametrize("stamp", [1764066600, 1764066600.5, True])
def test_an_epoch_number_timestamp_is_rejected(route: RouteName, stamp: object) -> None:
    """A JSON number (epoch seconds) is not accepted as a timestamp."""
    field = TIME_FIELD[route]
    data = good(route) | {field: stamp}
    assert (field,) in error_locations(MODELS[route], data)


def test_an_epoch_number_in_a_string_is_rejected() -> None:
    """A quoted epoch number is not an ISO-8601 timestamp with a zone and is refused."""
    data = good(RouteName.VALIDATION) | {"timestamp": "1764066600"}
    assert ("timestamp",) in error_locations(ValidationEvent, data)


def test_a_timezone_aware_datetime_object_is_accepted() -> None:
    """Python producers may pass a datetime with a zone instead of a string."""
    moment = datetime(2026, 11, 25, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    data = good(RouteName.VALIDATION) | {"timestamp": moment}
    assert ValidationEvent.model_validate(data).timestamp == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "result",
    [{"checks": {}}, {"valid": "true"}, {"valid": 1}, {"valid": None}],
    ids=["missing", "string", "int", "null"],
)
def test_validation_result_requires_a_boolean_valid(result: dict[str, Any]) -> None:
    """validation_result must hold a field `valid` that is a JSON boolean."""
    data = good(RouteName.VALIDATION) | {"validation_result": result}
    assert ("validation_result",) in error_locations(ValidationEvent, data)


def test_validation_result_is_kept_as_received() -> None:
    """validation_result is stored whole, nested fields included."""
    data = good(RouteName.VALIDATION)
    event = ValidationEvent.model_validate(data)
    assert event.validation_result == data["validation_result"]


@pytest.mark.parametrize("route", list(RouteName))
def test_unknown_top_level_fields_are_ignored(route: RouteName) -> None:
    """Fields a newer producer adds are dropped rather than refused."""
    data = good(route) | {"schema_version": 2, "trace": {"id": "abc"}}
    event = MODELS[route].model_validate(data)
    dumped = event.model_dump()
    assert "schema_version" not in dumped
    assert "trace" not in dumped


def test_events_are_immutable() -> None:
    """A validated event cannot be modified."""
    event = ValidationEvent.model_validate(good(RouteName.VALIDATION))
    with pytest.raises(ValidationError):
        event.plan_id = "other"  # type: ignore[misc]
