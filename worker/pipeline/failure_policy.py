"""What happens to a route's records when MongoDB stays unavailable after the retries.

Each route's `policy` (worker.pipeline.routes.FailurePolicy, set by FAIL_CLOSED_ROUTES):
fail-open dead-letters the records and goes on, fail-closed holds their partitions back
(nothing committed past them) until MongoDB answers.
`on_outage` applies it to the records a route could not write; a document MongoDB refuses for
good is not an outage and is dead-lettered whatever the policy (worker.pipeline.route_writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.dead_letters.headers import ERROR_TYPE_PERSIST_FAILED
from worker.dead_letters.letters import DeadLetter
from worker.errors import OperationRefused, TransientError, WorkerError
from worker.kafka.consumer import TopicPartition
from worker.ops import metrics
from worker.pipeline import log_lines
from worker.pipeline.records import Prepared
from worker.pipeline.routes import FailurePolicy, Route


@dataclass(slots=True)
class RouteResult:
    """A route's part of a batch once written: the records to dead-letter, the partitions held back."""

    dead: list[DeadLetter] = field(default_factory=list)
    blocked: set[TopicPartition] = field(default_factory=set)


def on_outage(route: Route, items: list[Prepared], exc: WorkerError) -> RouteResult:
    """An outage of the route: fail-closed blocks the partitions, fail-open dead-letters the records."""
    partitions = sorted({item.tp.partition for item in items})
    metrics.PERSIST_FAILURES.labels(route.name.value, route.policy.value).inc()
    if route.policy is FailurePolicy.FAIL_CLOSED:
        log_lines.log_blocked(route, partitions, len(items), exc)
        return RouteResult(blocked={item.tp for item in items})
    log_lines.log_failed(route, partitions, len(items), exc)
    reason = _failure_reason(exc)
    return RouteResult(
        dead=[
            DeadLetter(item.record, route.dlq_topic, ERROR_TYPE_PERSIST_FAILED, reason, str(exc))
            for item in items
        ]
    )


def _failure_reason(exc: WorkerError) -> str:
    """The `x-error-reason` of a route's records dead-lettered because of an outage."""
    if isinstance(exc, TransientError):
        return "retries_exhausted"
    if isinstance(exc, OperationRefused):
        return "operation_refused"
    return "write_error"
