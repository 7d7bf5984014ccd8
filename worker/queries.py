"""The persistence guide's example queries, as functions over the async database.

Each returns plain documents; the CLI (`persistence-worker query`) and the demo print them.
Every filter and sort is on an indexed field (see worker.mongo.indexes).
"""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


async def validations_by_outcome(db: AsyncDatabase[Document]) -> list[Document]:
    """`validation_audit` grouped by `validation_result.valid`, with totals."""
    pipeline: list[Document] = [
        {"$group": {"_id": "$validation_result.valid", "total": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    cursor = await db.validation_audit.aggregate(pipeline)
    return await cursor.to_list()


async def plan_validation_history(
    db: AsyncDatabase[Document], plan_id: str, limit: int = 20
) -> list[Document]:
    """A plan's validations, newest first."""
    cursor = db.validation_audit.find({"plan_id": plan_id}).sort("timestamp", DESCENDING).limit(limit)
    return await cursor.to_list()


async def workflows_with_sla_violations(db: AsyncDatabase[Document], limit: int = 20) -> list[Document]:
    """Workflow results whose `sla_status.violations_count` is above zero, latest first."""
    query = {"sla_status.violations_count": {"$gt": 0}}
    cursor = db.workflow_results.find(query).sort("consolidated_at", DESCENDING).limit(limit)
    return await cursor.to_list()


async def workflows_by_status(db: AsyncDatabase[Document], status: str, limit: int = 20) -> list[Document]:
    """Workflow results with the given status (e.g. FAILED), latest first."""
    query = {"status": status.upper()}
    cursor = db.workflow_results.find(query).sort("consolidated_at", DESCENDING).limit(limit)
    return await cursor.to_list()


async def recent_incidents(
    db: AsyncDatabase[Document], severity: str = "CRITICAL", limit: int = 20
) -> list[Document]:
    """The most recent incidents of a severity."""
    query = {"severity": severity.upper()}
    cursor = db.incidents.find(query).sort("timestamp", DESCENDING).limit(limit)
    return await cursor.to_list()


async def incidents_by_type(db: AsyncDatabase[Document]) -> list[Document]:
    """Incident totals per `type`, largest first."""
    pipeline: list[Document] = [
        {"$group": {"_id": "$type", "total": {"$sum": 1}}},
        {"$sort": {"total": -1, "_id": 1}},
    ]
    cursor = await db.incidents.aggregate(pipeline)
    return await cursor.to_list()


async def telemetry_with_retries(db: AsyncDatabase[Document], limit: int = 20) -> list[Document]:
    """Buffered telemetry that has been retried at least once, most retried first."""
    query = {"retry_count": {"$gt": 0}}
    cursor = (
        db.telemetry_buffer.find(query).sort([("retry_count", DESCENDING), ("buffered_at", 1)]).limit(limit)
    )
    return await cursor.to_list()
