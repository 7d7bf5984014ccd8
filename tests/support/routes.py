"""The routing table's columns the tests read, taken from the worker's own table (worker.pipeline.routes,
made by worker.pipeline.assembly): each route's input topic by default, and its collection."""

from __future__ import annotations

from tests.support.mongo import FakeGateway
from worker.pipeline.assembly import routes_for
from worker.settings import RouteName, Settings

DEFAULTS = Settings.model_construct()
"""The settings' defaults, whatever the environment of the run says."""
_TABLE = routes_for(DEFAULTS, FakeGateway())  # type: ignore[arg-type]

TOPICS: dict[RouteName, str] = {route.name: topic for topic, route in _TABLE.items()}
"""Each route's input topic (KAFKA_TOPIC_* by default)."""
COLLECTION: dict[RouteName, str] = {route.name: route.writer.collection for route in _TABLE.values()}
"""Where each route's documents are stored."""
