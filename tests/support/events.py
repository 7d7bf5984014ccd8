"""Realistic orchestrator events, good and malformed, for the demo, tests and benchmarks.

Deterministic for a given seed, so a run can be repeated and its expected counts known.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from worker.settings import RouteName

STATUSES = ("completed", "COMPLETED", "FAILED", "PARTIAL")
INCIDENT_TYPES = ("ticket_timeout", "worker_crash", "sla_breach", "dependency_down")
SEVERITIES = ("low", "MEDIUM", "High", "CRITICAL")
SOURCES = ("orchestrator", "executor", "sla-monitor")


@dataclass(frozen=True, slots=True)
class DemoEvent:
    route: RouteName
    key: bytes
    value: bytes
    valid: bool
    """Whether the worker must store it (False: it must be dead-lettered)."""


class EventFactory:
    """Builds events of the four kinds around a shared set of plans and workflows."""

    def __init__(self, *, seed: int = 7, start: datetime | None = None) -> None:
        self._random = random.Random(seed)
        self._start = start or datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
        self._serial = 0

    def _next(self) -> tuple[int, str]:
        self._serial += 1
        moment = self._start + timedelta(seconds=self._serial)
        return self._serial, moment.isoformat().replace("+00:00", "Z")

    def _ids(self, serial: int) -> tuple[str, str, str]:
        plan = serial % 40
        return f"plan-{plan:03d}", f"wf-{serial:06d}", f"intent-{plan % 9:02d}"

    def validation(self) -> dict[str, Any]:
        serial, when = self._next()
        plan_id, workflow_id, _ = self._ids(serial)
        valid = self._random.random() > 0.25
        result: dict[str, Any] = {"valid": valid, "checks": {"schema": True, "budget": valid}, "score": 0.9}
        if not valid:
            result["errors"] = [{"code": "BUDGET_EXCEEDED", "field": "steps[2].cost"}]
        return {
            "event_id": f"val-{serial}",
            "plan_id": plan_id,
            "workflow_id": workflow_id,
            "validation_result": result,
            "timestamp": when,
        }

    def result(self) -> dict[str, Any]:
        serial, when = self._next()
        plan_id, workflow_id, intent_id = self._ids(serial)
        violations = self._random.choice((0, 0, 0, 1, 3))
        return {
            "event_id": f"res-{serial}",
            "workflow_id": workflow_id,
            "plan_id": plan_id,
            "intent_id": intent_id,
            "status": self._random.choice(STATUSES),
            "metrics": {"duration_ms": self._random.randint(200, 90_000), "steps.completed": 7},
            "tickets_summary": {"total": 7, "failed": 1 if violations else 0},
            "sla_status": {"violations_count": violations, "deadline_met": violations == 0},
            "consolidated_at": when,
        }

    def incident(self) -> dict[str, Any]:
        serial, when = self._next()
        _, workflow_id, _ = self._ids(serial)
        return {
            "event_id": f"inc-{serial}",
            "workflow_id": workflow_id,
            "type": self._random.choice(INCIDENT_TYPES),
            "details": {"attempt": self._random.randint(1, 3), "action": "restart_step"},
            "timestamp": when,
            "severity": self._random.choice(SEVERITIES),
        }

    def telemetry(self) -> dict[str, Any]:
        serial, when = self._next()
        plan_id, workflow_id, intent_id = self._ids(serial)
        return {
            "event_id": f"tel-{serial}",
            "correlation": {"workflow_id": workflow_id, "plan_id": plan_id, "intent_id": intent_id},
            "metrics": {
                "cpu.usage": round(self._random.random(), 3),
                "latency_ms": self._random.randint(1, 900),
            },
            "timestamp": when,
            "source": self._random.choice(SOURCES),
        }

    def good(self, route: RouteName) -> dict[str, Any]:
        builders = {
            RouteName.VALIDATION: self.validation,
            RouteName.RESULTS: self.result,
            RouteName.INCIDENTS: self.incident,
            RouteName.TELEMETRY: self.telemetry,
        }
        return builders[route]()

    def malformed(self, route: RouteName) -> bytes:
        """One of the ways producers get it wrong, chosen at random."""
        good = self.good(route)
        kind = self._random.randrange(6)
        if kind == 0:
            return b"{not json"
        if kind == 1:
            return b'{"plan_id": "\xff\xfe"}'
        if kind == 2:
            good.pop(next(k for k in good if k != "event_id"))
        elif kind == 3:
            good["timestamp" if "timestamp" in good else "consolidated_at"] = "yesterday"
        elif kind == 4:
            good["$where"] = "sleep(1000)"
        else:
            good.setdefault("metrics", {})["bad\x00key"] = 1
            good.setdefault("details", {})["bad\x00key"] = 1
            good.setdefault("validation_result", {"valid": True})["bad\x00key"] = 1
        return orjson.dumps(good)

    def stream(self, count: int, *, malformed_ratio: float = 0.0) -> Iterator[DemoEvent]:
        routes = list(RouteName)
        for index in range(count):
            route = routes[index % len(routes)]
            if self._random.random() < malformed_ratio:
                yield DemoEvent(route, f"bad-{index}".encode(), self.malformed(route), valid=False)
                continue
            event = self.good(route)
            key = str(event.get("workflow_id") or event.get("correlation", {}).get("workflow_id"))
            yield DemoEvent(route, key.encode(), orjson.dumps(event), valid=True)
