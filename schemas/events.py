"""The orchestrator's event contracts: one pydantic v2 model per Kafka topic payload.

Pure data, no I/O: the orchestrator can import these models to build the events it
publishes. Validation is strict where the wire format is JSON (no str->int coercion),
timestamps must carry a zone and are normalised to UTC, and unknown top-level fields
are ignored so that producers can add fields before consumers know them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

__all__ = [
    "Correlation",
    "EventModel",
    "IncidentEvent",
    "Severity",
    "SlaStatus",
    "TelemetryEvent",
    "ValidationEvent",
    "WorkflowResultEvent",
]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_instant_in_utc(value: object, parse: ValidatorFunctionWrapHandler) -> datetime:
    """An ISO-8601 string (or a datetime built in Python) with its zone, as the same instant in UTC.

    Epoch numbers (and strings of them, which pydantic would read as epoch seconds) are refused;
    an instant outside years 1-9999 once in UTC is refused, not raised. One call per timestamp:
    this runs for every event the worker reads.
    """
    if not (isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value))):
        raise ValueError("must be an ISO-8601 string with a time zone, e.g. 2026-11-25T10:00:00Z")
    instant: datetime = parse(value)
    try:
        return instant.astimezone(UTC)
    except OverflowError:  # pydantic turns ValueError into a validation error, not OverflowError
        raise ValueError("is outside years 1-9999 once converted to UTC") from None


Timestamp = Annotated[AwareDatetime, WrapValidator(_iso_instant_in_utc)]
"""An ISO-8601 instant with an explicit zone, normalised to UTC."""

NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
JsonObject = dict[str, Any]


def _require_boolean_valid(value: JsonObject) -> JsonObject:
    if not isinstance(value.get("valid"), bool):
        raise ValueError("must contain a boolean field 'valid'")
    return value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class EventModel(BaseModel):
    """Fields every event may carry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: NonEmptyStr | None = Field(
        default=None,
        description="Producer-assigned identity; redeliveries with the same id are stored once.",
    )


class ValidationEvent(EventModel):
    """A plan validation (C1), stored in `validation_audit`."""

    plan_id: NonEmptyStr
    workflow_id: NonEmptyStr | None = None
    validation_result: Annotated[JsonObject, AfterValidator(_require_boolean_valid)] = Field(
        description="The validator's full result, stored as received; must hold boolean `valid`.",
        json_schema_extra={"required": ["valid"], "properties": {"valid": {"type": "boolean"}}},
    )
    timestamp: Timestamp


class SlaStatus(BaseModel):
    """SLA outcome of a workflow; other fields are kept as received."""

    model_config = ConfigDict(extra="allow", frozen=True)

    violations_count: StrictInt = Field(ge=0)


class WorkflowResultEvent(EventModel):
    """A consolidated workflow result (C5), stored in `workflow_results` under `_id = workflow_id`."""

    workflow_id: NonEmptyStr
    plan_id: NonEmptyStr
    intent_id: NonEmptyStr
    status: Annotated[NonEmptyStr, AfterValidator(str.upper)] = Field(
        description="Stored upper-case, e.g. COMPLETED, FAILED, PARTIAL."
    )
    metrics: JsonObject
    tickets_summary: JsonObject
    sla_status: SlaStatus
    consolidated_at: Timestamp


class Severity(StrEnum):
    """Incident severity; input is case-insensitive."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


_SEVERITY_ANY_CASE = {
    "type": "string",
    "pattern": "^([Ll][Oo][Ww]|[Mm][Ee][Dd][Ii][Uu][Mm]|[Hh][Ii][Gg][Hh]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])$",
    "description": "LOW, MEDIUM, HIGH or CRITICAL in any case; stored upper-case.",
}


class IncidentEvent(EventModel):
    """A self-healing incident (flow E), stored in `incidents`."""

    workflow_id: NonEmptyStr
    type: NonEmptyStr
    details: JsonObject
    timestamp: Timestamp
    severity: Annotated[
        Severity, BeforeValidator(_upper), WithJsonSchema(_SEVERITY_ANY_CASE, mode="validation")
    ]


class Correlation(BaseModel):
    """Which workflow a telemetry sample belongs to; other fields are kept as received."""

    model_config = ConfigDict(extra="allow", frozen=True)

    workflow_id: NonEmptyStr
    plan_id: NonEmptyStr | None = None
    intent_id: NonEmptyStr | None = None


class TelemetryEvent(EventModel):
    """Telemetry that must reach the observability pipeline, buffered in `telemetry_buffer`."""

    correlation: Correlation
    metrics: JsonObject
    timestamp: Timestamp
    source: NonEmptyStr
