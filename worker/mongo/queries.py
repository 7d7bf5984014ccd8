"""The persistence guide's example queries, as functions over the async database, and their registry.

Each query is built as a `FindQuery` or `AggregateQuery` (collection, filter, sort, limit or
pipeline), so a test can run the very same query through `explain`; the functions return
plain documents, for the demo and the tests. Every filter and sort is on an indexed field
(see worker.mongo.indexes), except `validations_by_outcome`, which counts every document of
`validation_audit` (the guide has no index on `validation_result.valid`, and a count of all
documents reads them all anyway).

GUIDE_QUERIES, at the end, is the one table of the queries `persistence-worker query` offers:
name, help, columns, parameters and builder. A new query is a builder and a row there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from schemas.events import Severity
from worker.mongo.collections import INCIDENTS, TELEMETRY_BUFFER, VALIDATION_AUDIT, WORKFLOW_RESULTS, Document
from worker.mongo.errors import converting

DEFAULT_LIMIT = 20
MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class FindQuery:
    collection: str
    filter: Document
    sort: list[tuple[str, int]]
    limit: int

    async def run(self, db: AsyncDatabase[Document]) -> list[Document]:
        """The matching documents; TransientError or PermanentError when MongoDB fails."""
        with converting():
            cursor = db[self.collection].find(self.filter).sort(self.sort).limit(self.limit)
            return await cursor.to_list()

    def explain_command(self) -> Document:
        """The `find` command this query sends, for `db.command("explain", ...)`."""
        return {"find": self.collection, "filter": self.filter, "sort": dict(self.sort), "limit": self.limit}


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    collection: str
    pipeline: list[Document] = field(default_factory=list)

    async def run(self, db: AsyncDatabase[Document]) -> list[Document]:
        """The pipeline's output; TransientError or PermanentError when MongoDB fails."""
        with converting():
            cursor = await db[self.collection].aggregate(self.pipeline)
            return await cursor.to_list()

    def explain_command(self) -> Document:
        """The `aggregate` command this query sends, for `db.command("explain", ...)`."""
        return {"aggregate": self.collection, "pipeline": self.pipeline, "cursor": {}}


Query = FindQuery | AggregateQuery


def validations_by_outcome_query() -> AggregateQuery:
    """`validation_audit` grouped by `validation_result.valid`, with totals."""
    return AggregateQuery(
        VALIDATION_AUDIT,
        [
            {"$group": {"_id": "$validation_result.valid", "total": {"$sum": 1}}},
            {"$sort": {"_id": 1}},
        ],
    )


def plan_validation_history_query(plan_id: str, limit: int = DEFAULT_LIMIT) -> FindQuery:
    """A plan's validations, newest first: index (plan_id, timestamp)."""
    return FindQuery(VALIDATION_AUDIT, {"plan_id": plan_id}, [("timestamp", DESCENDING)], limit)


def workflows_with_sla_violations_query(limit: int = DEFAULT_LIMIT) -> FindQuery:
    """Results with `sla_status.violations_count` above zero, latest first: walks index consolidated_at."""
    query = {"sla_status.violations_count": {"$gt": 0}}
    return FindQuery(WORKFLOW_RESULTS, query, [("consolidated_at", DESCENDING)], limit)


def workflows_by_status_query(status: str, limit: int = DEFAULT_LIMIT) -> FindQuery:
    """Results with a status (e.g. FAILED), latest first: index (status, consolidated_at)."""
    return FindQuery(WORKFLOW_RESULTS, {"status": status.upper()}, [("consolidated_at", DESCENDING)], limit)


def recent_incidents_query(severity: str = "CRITICAL", limit: int = DEFAULT_LIMIT) -> FindQuery:
    """The most recent incidents of a severity: index (severity, timestamp)."""
    return FindQuery(INCIDENTS, {"severity": severity.upper()}, [("timestamp", DESCENDING)], limit)


def incidents_by_type_query() -> AggregateQuery:
    """Incident totals per `type`, largest first.

    The leading `$sort` on `type` lets the server read the `type` index alone (a covered
    index scan) instead of every document.
    """
    return AggregateQuery(
        INCIDENTS,
        [
            {"$sort": {"type": ASCENDING}},
            {"$group": {"_id": "$type", "total": {"$sum": 1}}},
            {"$sort": {"total": DESCENDING, "_id": ASCENDING}},
        ],
    )


def telemetry_with_retries_query(limit: int = DEFAULT_LIMIT) -> FindQuery:
    """Buffered telemetry retried at least once, most retried first, then newest first: the index
    (retry_count, buffered_at) read backwards, so the server sorts nothing.

    Delivered documents kept as tombstones (worker.telemetry.buffer) have no `retry_count`, so
    `$gt: 0` leaves them out without a condition on `state` (which would let a planner pick
    another index, or none).
    """
    return FindQuery(
        TELEMETRY_BUFFER,
        {"retry_count": {"$gt": 0}},
        [("retry_count", DESCENDING), ("buffered_at", DESCENDING)],
        limit,
    )


async def validations_by_outcome(db: AsyncDatabase[Document]) -> list[Document]:
    return await validations_by_outcome_query().run(db)


async def plan_validation_history(
    db: AsyncDatabase[Document], plan_id: str, limit: int = DEFAULT_LIMIT
) -> list[Document]:
    return await plan_validation_history_query(plan_id, limit).run(db)


async def workflows_with_sla_violations(
    db: AsyncDatabase[Document], limit: int = DEFAULT_LIMIT
) -> list[Document]:
    return await workflows_with_sla_violations_query(limit).run(db)


async def workflows_by_status(
    db: AsyncDatabase[Document], status: str, limit: int = DEFAULT_LIMIT
) -> list[Document]:
    return await workflows_by_status_query(status, limit).run(db)


async def recent_incidents(
    db: AsyncDatabase[Document], severity: str = "CRITICAL", limit: int = DEFAULT_LIMIT
) -> list[Document]:
    return await recent_incidents_query(severity, limit).run(db)


async def incidents_by_type(db: AsyncDatabase[Document]) -> list[Document]:
    return await incidents_by_type_query().run(db)


async def telemetry_with_retries(db: AsyncDatabase[Document], limit: int = DEFAULT_LIMIT) -> list[Document]:
    return await telemetry_with_retries_query(limit).run(db)


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """A value a guide query is built with (the builder's keyword `name`), as a caller gives it."""

    name: str
    help: str
    default: str | int | None = None
    """None: required, and given alone (`query plan-history PLAN_ID`); else `--name`, defaulting to this."""
    choices: tuple[str, ...] = ()
    any_case: bool = False
    """Text given in any case is taken upper-cased."""
    maximum: int | None = None
    """A whole number (default an int) from 1 to this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GuideQuery:
    """One query of the guide: what `persistence-worker query NAME` says, shows and runs."""

    name: str
    help: str
    columns: tuple[str, ...]
    """The table's columns: fields of the result documents, dotted for nested ones."""
    build: Callable[..., Query]
    """The query, given each parameter's value by its name."""
    parameters: tuple[Parameter, ...] = ()

    def bound(self, values: Mapping[str, Any]) -> Query:
        """The query built with its parameters' values taken from `values` (other keys ignored)."""
        return self.build(**{parameter.name: values[parameter.name] for parameter in self.parameters})


LIMIT = Parameter(name="limit", help=f"rows at most, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
                  default=DEFAULT_LIMIT, maximum=MAX_LIMIT)  # fmt: skip
"""The parameter of the queries that return documents (the others return totals)."""

GUIDE_QUERIES: dict[str, GuideQuery] = {
    query.name: query
    for query in (
        GuideQuery(name="validations", help="validation outcomes: totals of valid and invalid plans",
                   columns=("_id", "total"), build=validations_by_outcome_query),
        GuideQuery(name="plan-history", help="one plan's validations, newest first",
                   columns=("timestamp", "workflow_id", "validation_result.valid", "hash"),
                   build=plan_validation_history_query,
                   parameters=(Parameter(name="plan_id", help="the plan (validation_audit.plan_id)"), LIMIT)),
        GuideQuery(name="sla-violations", help="workflows with SLA violations, newest first",
                   columns=("_id", "status", "sla_status.violations_count", "consolidated_at"),
                   build=workflows_with_sla_violations_query, parameters=(LIMIT,)),
        GuideQuery(name="workflows", help="workflows in one status (default FAILED), newest first",
                   columns=("_id", "plan_id", "status", "consolidated_at"), build=workflows_by_status_query,
                   parameters=(Parameter(name="status", default="FAILED", any_case=True,
                                         help="any case: COMPLETED, FAILED, PARTIAL, ... (default FAILED)"),
                               LIMIT)),
        GuideQuery(name="incidents", help="incidents of one severity (default CRITICAL), newest first",
                   columns=("timestamp", "severity", "type", "workflow_id"), build=recent_incidents_query,
                   parameters=(Parameter(name="severity", default=Severity.CRITICAL.value, any_case=True,
                                         choices=tuple(severity.value for severity in Severity),
                                         help="any case (default CRITICAL)"),
                               LIMIT)),
        GuideQuery(name="incident-types", help="incident totals per type",
                   columns=("_id", "total"), build=incidents_by_type_query),
        GuideQuery(name="telemetry-retries",
                   help="buffered telemetry tried at least once, most retried first, then newest",
                   columns=("_id", "correlation.workflow_id", "retry_count", "buffered_at"),
                   build=telemetry_with_retries_query, parameters=(LIMIT,)),
    )
}  # fmt: skip
