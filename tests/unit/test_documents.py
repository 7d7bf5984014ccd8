"""Specification of the MongoDB documents built in schemas.documents."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.documents import (
    canonical_hash,
    document_id,
    incident_document,
    telemetry_buffer_document,
    validation_audit_document,
    workflow_result_document,
)
from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent
from tests.support.events import EventFactory


def validation_event(**changes: Any) -> ValidationEvent:
    data = EventFactory(seed=5).validation() | changes
    return ValidationEvent.model_validate({k: v for k, v in data.items() if v is not None})


def test_hash_is_sha256_of_compact_sorted_json() -> None:
    """The validation_audit `hash` is sha256 of the result's JSON with sorted keys and no spaces."""
    result = {"valid": True, "score": 0.5, "checks": {"schema": True, "budget": False}, "errors": []}
    expected = hashlib.sha256(json.dumps(result, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    document = validation_audit_document(validation_event(validation_result=result))
    assert document["hash"] == expected


def test_hash_ignores_key_order() -> None:
    """Equal validation results hash equally whatever the order of their keys, nested ones included."""
    first = {"valid": False, "checks": {"a": 1, "b": 2}}
    second = {"checks": {"b": 2, "a": 1}, "valid": False}
    assert (
        validation_audit_document(validation_event(validation_result=first))["hash"]
        == validation_audit_document(validation_event(validation_result=second))["hash"]
    )


@pytest.mark.parametrize(
    "other",
    [{"valid": False}, {"valid": True, "extra": None}, {"valid": True, "score": 1}],
)
def test_hash_differs_for_different_results(other: dict[str, Any]) -> None:
    """Different validation results have different hashes."""
    assert canonical_hash({"valid": True}) != canonical_hash(other)


def test_validation_audit_document_holds_the_event() -> None:
    """validation_audit keeps plan, workflow, the whole result and the UTC timestamp, under the event id."""
    event = validation_event()
    document = validation_audit_document(event)
    assert document == {
        "_id": event.event_id,
        "plan_id": event.plan_id,
        "workflow_id": event.workflow_id,
        "validation_result": event.validation_result,
        "timestamp": event.timestamp,
        "hash": canonical_hash(event.validation_result),
    }


def test_document_id_is_the_event_id_when_present() -> None:
    """A producer-assigned event_id becomes the document's `_id`."""
    assert document_id(validation_event(event_id="val-42")) == "val-42"


def test_document_id_without_event_id_is_a_stable_content_hash() -> None:
    """Without event_id, `_id` is a sha256 hex of the content, equal for equal events."""
    first = document_id(validation_event(event_id=None))
    assert first == document_id(validation_event(event_id=None))
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_document_id_does_not_depend_on_how_the_zone_is_written() -> None:
    """The same instant written with "+00:00", "Z" or another offset gives the same `_id`."""
    ids = {
        document_id(validation_event(event_id=None, timestamp=stamp))
        for stamp in ("2026-11-25T08:00:00+00:00", "2026-11-25T08:00:00Z", "2026-11-25T09:00:00+01:00")
    }
    assert len(ids) == 1


def test_document_id_does_not_depend_on_key_order_or_ignored_fields() -> None:
    """Reordered keys and unknown top-level fields do not change the content-derived `_id`."""
    data = EventFactory(seed=5).validation()
    del data["event_id"]
    reordered = dict(reversed(list(data.items()))) | {"unknown": 1}
    assert document_id(ValidationEvent.model_validate(data)) == document_id(
        ValidationEvent.model_validate(reordered)
    )


def test_document_id_differs_for_different_content() -> None:
    """Events that differ in content get different content-derived ids."""
    assert document_id(validation_event(event_id=None, plan_id="plan-a")) != document_id(
        validation_event(event_id=None, plan_id="plan-b")
    )


def test_workflow_result_id_is_the_workflow_id() -> None:
    """workflow_results documents are keyed by workflow_id, not event_id."""
    event = WorkflowResultEvent.model_validate(EventFactory(seed=5).result())
    document = workflow_result_document(event)
    assert document["_id"] == event.workflow_id == document["workflow_id"]
    assert document["status"] == event.status
    assert document["sla_status"] == event.sla_status.model_dump()
    assert document["consolidated_at"] == event.consolidated_at


def test_incident_document_stores_severity_as_upper_case_text() -> None:
    """incidents store severity as the plain upper-case string."""
    data = EventFactory(seed=5).incident() | {"severity": "high"}
    document = incident_document(IncidentEvent.model_validate(data))
    assert document["severity"] == "HIGH"
    assert type(document["severity"]) is str
    assert document["_id"] == data["event_id"]


def test_telemetry_buffer_document_starts_unretried_at_the_given_time() -> None:
    """A telemetry buffer entry has retry_count 0 and the buffered_at it was given."""
    event = TelemetryEvent.model_validate(EventFactory(seed=5).telemetry())
    moment = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    document = telemetry_buffer_document(event, buffered_at=moment)
    assert document["retry_count"] == 0
    assert document["buffered_at"] == moment
    assert document["metrics"] == event.metrics
    assert document["source"] == event.source


def test_telemetry_buffer_document_omits_absent_correlation_fields() -> None:
    """Correlation fields the producer left out are not stored as nulls; extra ones are kept."""
    data = EventFactory(seed=5).telemetry() | {"correlation": {"workflow_id": "wf-9", "tenant": "acme"}}
    document = telemetry_buffer_document(
        TelemetryEvent.model_validate(data), buffered_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert document["correlation"] == {"workflow_id": "wf-9", "tenant": "acme"}
