"""The MongoDB document each event becomes, and how its identity is derived.

Identity makes redelivery harmless: `_id` is the producer's `event_id` when given,
otherwise the sha256 of the event's canonical JSON, so the same event stored twice
collides on `_id` instead of creating a second document. `workflow_results` uses the
workflow id itself, as the persistence guide prescribes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, TypedDict

import orjson

from schemas.events import (
    EventModel,
    IncidentEvent,
    TelemetryEvent,
    ValidationEvent,
    WorkflowResultEvent,
)

__all__ = [
    "IncidentDocument",
    "TelemetryBufferDocument",
    "ValidationAuditDocument",
    "WorkflowResultDocument",
    "canonical_hash",
    "document_id",
    "incident_document",
    "telemetry_buffer_document",
    "validation_audit_document",
    "workflow_result_document",
]


def canonical_hash(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value` (sorted keys, no spaces, UTC `Z` dates)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)).hexdigest()


def document_id(event: EventModel) -> str:
    """The `_id` of the document an event becomes: its `event_id`, else a hash of its content."""
    if event.event_id is not None:
        return event.event_id
    return canonical_hash(event.model_dump(mode="json", exclude={"event_id"}))


class ValidationAuditDocument(TypedDict):
    _id: str
    plan_id: str
    workflow_id: str | None
    validation_result: dict[str, Any]
    timestamp: datetime
    hash: str


class WorkflowResultDocument(TypedDict):
    _id: str
    workflow_id: str
    plan_id: str
    intent_id: str
    status: str
    metrics: dict[str, Any]
    tickets_summary: dict[str, Any]
    sla_status: dict[str, Any]
    consolidated_at: datetime


class IncidentDocument(TypedDict):
    _id: str
    workflow_id: str
    type: str
    details: dict[str, Any]
    timestamp: datetime
    severity: str


class TelemetryBufferDocument(TypedDict):
    _id: str
    correlation: dict[str, Any]
    metrics: dict[str, Any]
    timestamp: datetime
    source: str
    buffered_at: datetime
    retry_count: int
    due_at: datetime
    """When the redelivery loop may claim it: at once (worker.telemetry.buffer)."""


def validation_audit_document(event: ValidationEvent) -> ValidationAuditDocument:
    return {
        "_id": document_id(event),
        # The guide's order: plan_id, validation_result (whole), workflow_id, timestamp, hash.
        "plan_id": event.plan_id,
        "validation_result": event.validation_result,
        "workflow_id": event.workflow_id,
        "timestamp": event.timestamp,
        "hash": canonical_hash(event.validation_result),
    }


def workflow_result_document(event: WorkflowResultEvent) -> WorkflowResultDocument:
    return {
        "_id": event.workflow_id,
        "workflow_id": event.workflow_id,
        "plan_id": event.plan_id,
        "intent_id": event.intent_id,
        "status": event.status,
        "metrics": event.metrics,
        "tickets_summary": event.tickets_summary,
        "sla_status": event.sla_status.model_dump(),
        "consolidated_at": event.consolidated_at,
    }


def incident_document(event: IncidentEvent) -> IncidentDocument:
    return {
        "_id": document_id(event),
        "workflow_id": event.workflow_id,
        "type": event.type, "details": event.details,  # what happened
        "timestamp": event.timestamp, "severity": event.severity.value,  # when, and how bad
    }  # fmt: skip


def telemetry_buffer_document(event: TelemetryEvent, *, buffered_at: datetime) -> TelemetryBufferDocument:
    return {
        "_id": document_id(event),
        "correlation": event.correlation.model_dump(exclude_none=True),
        "metrics": event.metrics,
        "timestamp": event.timestamp,
        "source": event.source,
        "buffered_at": buffered_at,
        "retry_count": 0,
        "due_at": buffered_at,
    }
