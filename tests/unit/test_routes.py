"""Specification of worker.pipeline.routes: the routing table built from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent
from tests.support.events import EventFactory
from worker.mongo.gateway import MongoGateway
from worker.mongo.writers import InsertWriter, LatestWinsWriter
from worker.pipeline.assembly import routes_for
from worker.pipeline.routes import FailurePolicy, Route
from worker.settings import RouteName, Settings


@pytest.fixture
async def gateway() -> AsyncIterator[MongoGateway]:
    """A gateway over a client that never contacts a server."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient("mongodb://localhost:1", connect=False)
    yield MongoGateway(client=client, database_name="orchestrator")
    await client.close()


def by_name(routes: dict[str, Route]) -> dict[RouteName, Route]:
    return {route.name: route for route in routes.values()}


def test_the_table_maps_each_topic_to_model_collection_and_log_event(gateway: MongoGateway) -> None:
    """Each input topic has its route: event model, target collection, saved-log event and DLQ topic."""
    routes = routes_for(Settings(), gateway)
    assert {
        topic: (r.name, r.model, r.writer.collection, r.saved_event, r.dlq_topic) for topic, r in routes.items()
    } == {
        "orchestrator.validation": (
            RouteName.VALIDATION, ValidationEvent, "validation_audit",
            "validation_audit_saved", "orchestrator.validation.dlq",
        ),
        "orchestrator.results": (
            RouteName.RESULTS, WorkflowResultEvent, "workflow_results",
            "workflow_result_saved", "orchestrator.results.dlq",
        ),
        "orchestrator.incidents": (
            RouteName.INCIDENTS, IncidentEvent, "incidents", "incident_saved", "orchestrator.incidents.dlq",
        ),
        "orchestrator.telemetry": (
            RouteName.TELEMETRY, TelemetryEvent, "telemetry_buffer",
            "telemetry_buffered", "orchestrator.telemetry.dlq",
        ),
    }  # fmt: skip


def test_workflow_results_are_latest_wins_and_others_inserts(gateway: MongoGateway) -> None:
    """workflow_results upserts guarded on consolidated_at; the other collections are plain inserts."""
    routes = by_name(routes_for(Settings(), gateway))
    assert isinstance(routes[RouteName.RESULTS].writer, LatestWinsWriter)
    assert all(
        isinstance(routes[name].writer, InsertWriter)
        for name in (RouteName.VALIDATION, RouteName.INCIDENTS, RouteName.TELEMETRY)
    )


def test_routes_are_fail_open_unless_named_in_fail_closed_routes(gateway: MongoGateway) -> None:
    """Only the routes listed in FAIL_CLOSED_ROUTES are fail-closed."""
    routes = by_name(routes_for(Settings(fail_closed_routes="incidents, RESULTS"), gateway))
    assert {name: route.policy for name, route in routes.items()} == {
        RouteName.VALIDATION: FailurePolicy.FAIL_OPEN,
        RouteName.RESULTS: FailurePolicy.FAIL_CLOSED,
        RouteName.INCIDENTS: FailurePolicy.FAIL_CLOSED,
        RouteName.TELEMETRY: FailurePolicy.FAIL_OPEN,
    }


def test_topics_and_dlq_suffix_come_from_the_settings(gateway: MongoGateway) -> None:
    """Renamed topics and a custom DLQ suffix are used as configured."""
    settings = Settings(kafka_topic_incidents="prod.incidents", kafka_dlq_suffix="-dead")
    route = routes_for(settings, gateway)["prod.incidents"]
    assert (route.name, route.dlq_topic) == (RouteName.INCIDENTS, "prod.incidents-dead")


def test_the_failed_log_event_is_named_after_the_collection(gateway: MongoGateway) -> None:
    """A route logs `<collection>_persist_failed` when its writes fail for good."""
    routes = by_name(routes_for(Settings(), gateway))
    assert routes[RouteName.TELEMETRY].failed_event == "telemetry_buffer_persist_failed"
    assert routes[RouteName.RESULTS].failed_event == "workflow_results_persist_failed"


def test_telemetry_is_buffered_now_with_no_retries(gateway: MongoGateway) -> None:
    """The telemetry route's document is stamped buffered_at = now (UTC) with retry_count 0."""
    route = by_name(routes_for(Settings(), gateway))[RouteName.TELEMETRY]
    event = TelemetryEvent.model_validate(EventFactory(seed=2).telemetry())
    document = route.to_document(event)
    assert document["retry_count"] == 0
    assert abs(datetime.now(UTC) - document["buffered_at"]) < timedelta(seconds=5)
    assert document["buffered_at"].utcoffset() == timedelta(0)
