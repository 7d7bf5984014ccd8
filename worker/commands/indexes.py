"""`persistence-worker indexes check|ensure`: one line per expected index, saying what is or would be done."""

from __future__ import annotations

import argparse
import asyncio

from worker.commands.exits import ExitCode
from worker.errors import WorkerError
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import open_gateway
from worker.mongo.indexes import (
    CollectionIndexReport,
    IndexSpec,
    ensure_indexes,
    expected_indexes,
    inspect_collection,
    ttl_only_differs,
)
from worker.ops.messages import report_failure
from worker.settings import Settings
from worker.telemetry.buffer import claim_index_created, date_the_undated


def check(settings: Settings, _args: argparse.Namespace) -> int:
    return asyncio.run(indexes_command(settings, create=False))


def ensure(settings: Settings, _args: argparse.Namespace) -> int:
    return asyncio.run(indexes_command(settings, create=True))


async def indexes_command(settings: Settings, *, create: bool) -> int:
    """Print one line per expected index; 0 if all are right, 1 on a conflict or gap, 3 if unreachable."""
    expected = expected_indexes(settings)
    async with open_gateway(settings) as gateway:
        try:
            database = await gateway.connect()
            if create:
                reports = await ensure_indexes(database, expected)
                if claim_index_created(reports):
                    await date_the_undated(database, lease_s=settings.redelivery_lease_s)
            else:
                reports = [await inspect_collection(database, name, kept) for name, kept in expected.items()]
        except WorkerError as exc:
            report_failure(mongodb_failure(exc, settings))
            return ExitCode.UNREACHABLE
    for report in reports:
        for label, text in report_lines(report):
            print(f"{report.collection:<18} {label:<16}  {text}")
    return ExitCode.OK if all(report.healthy for report in reports) else ExitCode.PROBLEM


def report_lines(report: CollectionIndexReport) -> list[tuple[str, str]]:
    """(label, index) per expected index: done by `ensure`, or what `ensure` would do after `check`."""
    lines = [("ok", spec.describe()) for spec in report.present]
    lines += [("updated TTL", spec.describe()) for spec in report.updated]
    lines += [("created", spec.describe()) for spec in report.created]
    lines += [("would create", spec.describe()) for spec in report.missing]
    lines += [_conflict_line(wanted, found) for wanted, found in report.conflicts]
    return lines


def _conflict_line(wanted: IndexSpec, found: IndexSpec) -> tuple[str, str]:
    difference = f"expected {wanted.describe()}, found {found.describe()}"
    if ttl_only_differs(wanted, found):  # only after `check`: `ensure` has set it already
        return "would update TTL", difference
    return "CONFLICT", f"{difference} (drop or modify it by hand; never dropped here)"
