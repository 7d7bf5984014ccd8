"""`persistence-worker query NAME ...`: the guide's queries as tables on a terminal, JSON for scripts."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

from worker.commands.exit_codes import ExitCode
from worker.commands.tables import print_tables, table
from worker.errors import WorkerError
from worker.mongo import queries
from worker.mongo.collections import Document
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import open_gateway
from worker.ops.messages import report_failure
from worker.settings import Settings

Query = Callable[[Any], Awaitable[list[Document]]]

COLUMNS: dict[str, tuple[str, ...]] = {
    "validations": ("_id", "total"),
    "plan-history": ("timestamp", "workflow_id", "validation_result.valid", "hash"),
    "sla-violations": ("_id", "status", "sla_status.violations_count", "consolidated_at"),
    "workflows": ("_id", "plan_id", "status", "consolidated_at"),
    "incidents": ("timestamp", "severity", "type", "workflow_id"),
    "incident-types": ("_id", "total"),
    "telemetry-retries": ("_id", "correlation.workflow_id", "retry_count", "buffered_at"),
}
HELP: dict[str, str] = {
    "validations": "validation outcomes: totals of valid and invalid plans",
    "plan-history": "one plan's validations, newest first",
    "sla-violations": "workflows with SLA violations, newest first",
    "workflows": "workflows in one status (default FAILED), newest first",
    "incidents": "incidents of one severity (default CRITICAL), newest first",
    "incident-types": "incident totals per type",
    "telemetry-retries": "buffered telemetry tried at least once, most retried first, then newest",
}
LIMITED = frozenset({"plan-history", "sla-violations", "workflows", "incidents", "telemetry-retries"})
"""The queries that return documents, at most --limit of them (the others are totals)."""
DEFAULT_LIMIT = 20
MAX_LIMIT = 10_000


def query_for(name: str, *, plan_id: str | None, status: str, severity: str, limit: int) -> queries.Query:
    """The query a subcommand runs (collection, filter, sort or pipeline), with its arguments bound."""
    builders: dict[str, Callable[[], queries.Query]] = {
        "validations": queries.validations_by_outcome_query,
        "plan-history": lambda: queries.plan_validation_history_query(plan_id or "", limit),
        "sla-violations": lambda: queries.workflows_with_sla_violations_query(limit),
        "workflows": lambda: queries.workflows_by_status_query(status, limit),
        "incidents": lambda: queries.recent_incidents_query(severity, limit),
        "incident-types": queries.incidents_by_type_query,
        "telemetry-retries": lambda: queries.telemetry_with_retries_query(limit),
    }
    return builders[name]()


def build_query(name: str, *, plan_id: str | None, status: str, severity: str, limit: int) -> Query:
    """The query function for a subcommand, with its arguments bound."""
    return query_for(name, plan_id=plan_id, status=status, severity=severity, limit=limit).run


async def query_command(settings: Settings, name: str, query: Query, *, as_json: bool) -> int:
    """Run one query and print it; 0 on success, 3 if MongoDB cannot be reached."""
    async with open_gateway(settings) as gateway:
        try:
            rows = await query(await gateway.connect())
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2, default=str) + b"\n")
    else:
        print_table(name, rows)
    return ExitCode.OK


def cell(document: Document, dotted: str) -> str:
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "" if value is None else str(value)


def print_table(name: str, rows: list[Document]) -> None:
    columns = COLUMNS[name]
    cells = ([cell(row, column) for column in columns] for row in rows)
    print_tables(table(f"{name} ({len(rows)} rows)", columns, cells))
