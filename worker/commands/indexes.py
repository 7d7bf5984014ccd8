"""`persistence-worker indexes ensure|check`: a table of expected vs present indexes."""

from __future__ import annotations

from worker.commands.exit_codes import ExitCode
from worker.errors import WorkerError
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import gateway_for
from worker.mongo.indexes import CollectionIndexReport, ensure_indexes, inspect_collection, with_retention
from worker.ops.messages import report_failure
from worker.settings import Settings


async def indexes_command(settings: Settings, *, create: bool) -> int:
    """Print one line per expected index; 0 if all are right, 1 on a conflict or gap, 3 if unreachable."""
    gateway = gateway_for(settings)
    expected = with_retention(settings.ttl_days())
    try:
        database = await gateway.connect()
        if create:
            reports = await ensure_indexes(database, expected)
        else:
            reports = [await inspect_collection(database, name, specs) for name, specs in expected.items()]
    except WorkerError as exc:
        report_failure(mongodb_failure(exc, settings))
        return ExitCode.UNREACHABLE
    finally:
        await gateway.close()
    for report in reports:
        _print_report(report)
    return ExitCode.OK if all(report.healthy for report in reports) else ExitCode.PROBLEM


def _print_report(report: CollectionIndexReport) -> None:
    for spec in report.present:
        print(f"{report.collection:<18} ok        {spec.describe()}")
    for spec in report.updated:
        print(f"{report.collection:<18} updated   {spec.describe()}")
    for spec in report.created:
        print(f"{report.collection:<18} created   {spec.describe()}")
    for spec in report.missing:
        print(f"{report.collection:<18} MISSING   {spec.describe()}")
    for wanted, found in report.conflicts:
        print(f"{report.collection:<18} CONFLICT  expected {wanted.describe()}, found {found.describe()}")
