"""`persistence-worker check`: an exec probe; exit 0 when MongoDB and Kafka both answer."""

from __future__ import annotations

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.errors import WorkerError
from worker.kafka import connection_options
from worker.mongo.gateway import MongoGateway, create_client
from worker.settings import Settings


async def check_mongodb(settings: Settings) -> str | None:
    """None when MongoDB answers a ping, else why not."""
    gateway = MongoGateway(client=create_client(settings), database_name=settings.mongodb_database)
    try:
        await gateway.connect()
    except WorkerError as exc:
        return f"MongoDB at {settings.mongodb_uri_for_logs()}: {exc}"
    finally:
        await gateway.close()
    return None


async def check_kafka(settings: Settings, timeout_s: float = 10) -> str | None:
    """None when the brokers answer a cluster description, else why not."""
    admin = AIOKafkaAdminClient(**connection_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout=timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout=timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"Kafka at {settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}"
    finally:
        await admin.close()
    return None


async def check_command(settings: Settings) -> int:
    problems = [p for p in await asyncio.gather(check_mongodb(settings), check_kafka(settings)) if p]
    for problem in problems:
        print(f"not ok: {problem}", file=sys.stderr)
    if not problems:
        print("ok: MongoDB and Kafka answer")
    return 1 if problems else 0
