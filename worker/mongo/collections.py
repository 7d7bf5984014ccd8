"""The four collections of the persistence guide, named once, and the shape of their documents."""

from __future__ import annotations

from typing import Any, Final

Document = dict[str, Any]
"""A MongoDB document as PyMongo reads and writes it."""

VALIDATION_AUDIT: Final = "validation_audit"
"""Each plan validation (C1), with the full `validation_result` and a `hash`."""
WORKFLOW_RESULTS: Final = "workflow_results"
"""Each consolidated workflow result (C5); `_id` is the `workflow_id`."""
INCIDENTS: Final = "incidents"
"""Self-healing incidents (flow E), with `severity`."""
TELEMETRY_BUFFER: Final = "telemetry_buffer"
"""Telemetry waiting for delivery, with `buffered_at` and `retry_count`."""

ALL: Final = (VALIDATION_AUDIT, WORKFLOW_RESULTS, INCIDENTS, TELEMETRY_BUFFER)
