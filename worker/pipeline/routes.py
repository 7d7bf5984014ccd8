"""The single routing table: input topic -> event model, document builder, writer, policy."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from schemas.documents import (
    incident_document,
    telemetry_buffer_document,
    validation_audit_document,
    workflow_result_document,
)
from schemas.events import (
    EventModel,
    IncidentEvent,
    TelemetryEvent,
    ValidationEvent,
    WorkflowResultEvent,
)
from worker.mongo import collections
from worker.mongo.gateway import MongoGateway
from worker.mongo.writers import InsertWriter, LatestWinsWriter, Writer
from worker.settings import DEFAULT_ROUTE_PRIORITY, RouteName


class FailurePolicy(StrEnum):
    """What happens when MongoDB stays unavailable after the retries."""

    FAIL_OPEN = "fail-open"
    """Dead-letter the batch (`<collection>_persist_failed`) and go on."""
    FAIL_CLOSED = "fail-closed"
    """Pause the partitions and retry until MongoDB answers; commit nothing past the failure."""


@dataclass(frozen=True, slots=True)
class Route:
    name: RouteName
    topic: str
    dlq_topic: str
    model: type[EventModel]
    to_document: Callable[[Any], Mapping[str, Any]]
    writer: Writer
    saved_event: str
    policy: FailurePolicy
    priority: int = 0
    """Its place in ROUTE_PRIORITY: 0 is served first when writes wait (worker.pipeline.write_gate)."""
    validate: Callable[[object], EventModel] = field(init=False, repr=False, compare=False)
    """`model.model_validate` without its wrapper (the same validator, one call less per record);
    raises pydantic's ValidationError."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "validate", self.model.__pydantic_validator__.validate_python)

    @property
    def failed_event(self) -> str:
        return f"{self.writer.collection}_persist_failed"


def _telemetry_document(event: TelemetryEvent) -> Mapping[str, Any]:
    return telemetry_buffer_document(event, buffered_at=datetime.now(UTC))


def build_routes(
    gateway: MongoGateway,
    *,
    topics: Mapping[RouteName, str],
    dlq_suffix: str,
    fail_closed: Collection[RouteName] = frozenset(),
    priority: Sequence[RouteName] = DEFAULT_ROUTE_PRIORITY,
) -> dict[str, Route]:
    """The routing table, keyed by input topic: `topics` names each route's input topic, whose
    dead-letter topic is that name plus `dlq_suffix`; the `fail_closed` routes hold on an outage;
    `priority` lists the routes from first served to last."""

    def insert(collection: str) -> Writer:
        return InsertWriter(gateway=gateway, collection=collection)

    results = LatestWinsWriter(
        gateway=gateway, collection=collections.WORKFLOW_RESULTS, version_field="consolidated_at"
    )
    table: list[tuple[RouteName, type[EventModel], Callable[[Any], Mapping[str, Any]], Writer, str]] = [
        (RouteName.VALIDATION, ValidationEvent, validation_audit_document,
         insert(collections.VALIDATION_AUDIT), "validation_audit_saved"),
        (RouteName.RESULTS, WorkflowResultEvent, workflow_result_document,
         results, "workflow_result_saved"),
        (RouteName.INCIDENTS, IncidentEvent, incident_document,
         insert(collections.INCIDENTS), "incident_saved"),
        (RouteName.TELEMETRY, TelemetryEvent, _telemetry_document,
         insert(collections.TELEMETRY_BUFFER), "telemetry_buffered"),
    ]  # fmt: skip
    routes = {}
    for name, model, to_document, writer, saved_event in table:
        topic = topics[name]
        routes[topic] = Route(
            name=name,
            topic=topic,
            dlq_topic=f"{topic}{dlq_suffix}",
            model=model,
            to_document=to_document,
            writer=writer,
            saved_event=saved_event,
            policy=FailurePolicy.FAIL_CLOSED if name in fail_closed else FailurePolicy.FAIL_OPEN,
            priority=list(priority).index(name),
        )
    return routes
