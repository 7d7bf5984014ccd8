"""`persistence-worker redeliver --once`: deliver what is due now through the loop's batches, then exit."""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaProducer

from worker.commands.exit_codes import ExitCode
from worker.errors import WorkerError
from worker.kafka.errors import converted
from worker.mongo.gateway import MongoGateway, gateway_for
from worker.settings import Settings
from worker.telemetry.delivery import create_delivery_producer
from worker.telemetry.redeliver import DrainTotals, drain_due, loop_for


async def redeliver_once(settings: Settings, stop: asyncio.Event) -> int:
    """Exit 0 if all that was due went, 1 if not, 3 if a server cannot be reached."""
    gateway = gateway_for(settings)
    producer = create_delivery_producer(settings)
    try:
        unreachable = await _reach(gateway, producer)
        if unreachable is not None:
            print(f"error: cannot reach the servers: {unreachable}", file=sys.stderr)
            return ExitCode.UNREACHABLE
        started = time.monotonic()
        loop = loop_for(settings, gateway, producer, stop)
        totals, error = await drain_due(loop, settings.redelivery_batch_size)
    finally:
        await producer.stop()
        await gateway.close()
    _print_summary(totals, error, time.monotonic() - started)
    clean = error is None and not (totals.rescheduled or totals.parked or totals.lost or stop.is_set())
    return ExitCode.OK if clean else ExitCode.PROBLEM


async def _reach(gateway: MongoGateway, producer: AIOKafkaProducer) -> str | None:
    """None once MongoDB and Kafka answer, else why not."""
    try:
        await gateway.connect()
    except WorkerError as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await converted(producer.start())
    except WorkerError as exc:
        return str(exc)  # "<aiokafka class>: <message>"
    return None


def _print_summary(totals: DrainTotals, error: str | None, elapsed_s: float) -> None:
    print(
        f"redeliver: delivered={totals.delivered} rescheduled={totals.rescheduled} parked={totals.parked} "
        f"in {elapsed_s:.1f}s ({totals.delivered / max(elapsed_s, 1e-9):.0f} documents/s)"
        + (f"; stopped: {error}" if error else "")
    )
