"""`persistence-worker check`: an exec probe; exit 0 when MongoDB and Kafka both answer, 3 if not."""

from __future__ import annotations

import asyncio
import sys

from worker.commands.exit_codes import ExitCode
from worker.errors import WorkerError
from worker.kafka.failures import probe_kafka
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import open_gateway
from worker.ops.messages import ServerFailure, report_failure
from worker.settings import Settings
from worker.settings_typos import UnknownVariable


async def check_mongodb(settings: Settings) -> ServerFailure | None:
    """None when MongoDB answers a ping, else why not."""
    async with open_gateway(settings) as gateway:
        try:
            await gateway.connect()
        except WorkerError as exc:
            return mongodb_failure(exc, settings)
    return None


async def check_command(settings: Settings, unknown: list[UnknownVariable]) -> int:
    """Both servers probed at once; misspelled-looking variables reported as warnings."""
    for variable in unknown:
        print(f"warning: {variable.describe()}", file=sys.stderr)
    probes = await asyncio.gather(check_mongodb(settings), probe_kafka(settings))
    failures = [failure for failure in probes if failure is not None]
    for failure in failures:
        report_failure(failure, prefix="not ok")
    if failures:
        return ExitCode.UNREACHABLE
    print(f"ok: MongoDB at {settings.mongodb_hosts()} and Kafka at {settings.kafka_bootstrap_servers} answer")
    return ExitCode.OK
