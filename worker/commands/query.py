"""`persistence-worker query NAME ...`: a guide query (worker.mongo.queries) as a table, or JSON."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import Any

from worker.commands.exits import ExitCode
from worker.commands.output import print_json, print_tables, table
from worker.errors import WorkerError
from worker.mongo.collections import Document
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import open_gateway
from worker.mongo.queries import GUIDE_QUERIES, GuideQuery
from worker.ops.messages import report_failure
from worker.settings import Settings


def query(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(query_command(settings, GUIDE_QUERIES[args.name], vars(args), as_json=args.json))


async def query_command(
    settings: Settings, guide: GuideQuery, values: dict[str, Any], *, as_json: bool
) -> int:
    """Run a query with its parameters' `values` and print it; 0 on success, 3 if MongoDB is unreachable."""
    bound = guide.bound(values)
    async with open_gateway(settings) as gateway:
        try:
            rows = await bound.run(await gateway.connect())
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
    if as_json:
        print_json(rows)
    else:
        cells = ([cell(row, column) for column in guide.columns] for row in rows)
        print_tables(table(f"{guide.name} ({len(rows)} rows)", guide.columns, cells))
    return ExitCode.OK


def cell(document: Document, dotted: str) -> str:
    """The value at a dotted path of `document`, as a table shows it ("" when absent)."""
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "" if value is None else str(value)
