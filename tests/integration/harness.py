"""Helpers for end-to-end tests: settings per test, the worker in-process or as a process,
publishing, reading topics, committed offsets, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.demo.publish import read_until_idle
from tests.support.events import EventFactory
from tests.support.processes import stop
from worker.app import run_worker
from worker.settings import RouteName, Settings

FAST_RETRIES = {
    "retry_max_attempts": 2,
    "retry_backoff_coefficient": 0.05,
    "retry_initial_interval_ms": 50,
    "retry_max_interval_ms": 500,
    "mongodb_server_selection_timeout_ms": 500,
}


def settings_for(*, name: str, bootstrap: str, mongo_uri: str, **overrides: Any) -> Settings:
    """Settings with topics, group and database of this test's own, and quick retries."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "mongodb_uri": mongo_uri,
        "mongodb_database": name,
        "kafka_consumer_group": f"{name}-group",
        "kafka_topic_validation": f"{name}.validation",
        "kafka_topic_results": f"{name}.results",
        "kafka_topic_incidents": f"{name}.incidents",
        "kafka_topic_telemetry": f"{name}.telemetry",
        "kafka_session_timeout_ms": 6000,
        "kafka_heartbeat_interval_ms": 500,
        "kafka_poll_timeout_ms": 200,
        "redelivery_enabled": False,
        "http_port": 0,
        **FAST_RETRIES,
        **overrides,
    }
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a worker process read exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_", "RETRY_"))}
    for field, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, frozenset):
            value = ",".join(sorted(value))
        elif isinstance(value, tuple):
            value = ",".join(value)
        env[field.upper()] = str(value)
    env["LOG_FORMAT"] = "json"
    return env


def input_topics(settings: Settings) -> list[str]:
    return [settings.topic_for(route) for route in RouteName]


async def prepare_topics(
    create_topics: Callable[..., Awaitable[None]], settings: Settings, partitions: int = 3
) -> None:
    """Create the four input topics and their dead-letter topics."""
    topics = input_topics(settings)
    await create_topics(*topics, partitions=partitions)
    await create_topics(*(settings.dlq_topic(t) for t in topics), partitions=1)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's `run_worker` as a task in this event loop; drained on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def publish(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    *,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    count = 0
    try:
        for index, value in enumerate(values):
            key = keys[index] if keys is not None else None
            await producer.send(topic, value, key=key, headers=list(headers))
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def publish_good(settings: Settings, route: RouteName, count: int, seed: int) -> None:
    """`count` valid events of `route` (EventFactory(seed)), event ids `<seed>-<i>`, to the route's topic."""
    factory = EventFactory(seed=seed)
    values = [orjson.dumps({**factory.good(route), "event_id": f"{seed}-{i}"}) for i in range(count)]
    await publish(settings.kafka_bootstrap_servers, settings.topic_for(route), values)


async def read_topic(bootstrap: str, topic: str, *, idle_ms: int = 1500) -> list[Any]:
    """Every record of `topic` from the start, read until nothing arrives for `idle_ms`."""
    return await read_until_idle([topic], idle_ms=idle_ms, bootstrap_servers=bootstrap)


async def committed_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int | None]:
    """The consumer group's committed offset per partition of `topic` (None: nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.kafka_consumer_group, enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll `condition` until true; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.2)


async def settled(read: Callable[[], Awaitable[int]], *, apart_s: float = 0.5, within: float = 30) -> int:
    """`read()`'s value once two reads `apart_s` apart agree (fails if it still changes after `within`)."""
    deadline = time.monotonic() + within
    last = await read()
    while True:
        await asyncio.sleep(apart_s)
        current = await read()
        if current == last:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {within}s: {last} then {current}")
        last = current


class WorkerProcess:
    """`python -m worker run` as a real process, its JSON log lines kept in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self._env = settings_env(settings)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"], env=self._env, stderr=log
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM and the exit code; past `timeout` the process is killed and TimeoutExpired raised."""
        assert self.process is not None
        return stop(self.process, timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


Outgoing = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]
"""One record to publish: key, value, headers."""


async def publish_records(bootstrap: str, topic: str, records: Iterable[Outgoing]) -> int:
    """Publish records each with its own key and headers (acks=all); return how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=8 * 1024 * 1024)  # fmt: skip
    await producer.start()
    count = 0
    try:
        sends = []
        for key, value, headers in records:
            sends.append(await producer.send(topic, value, key=key, headers=list(headers)))
            count += 1
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return count


async def ensure_topics(bootstrap: str, names: Sequence[str], *, partitions: int) -> None:
    """Create topics on `bootstrap`, leaving any that already exist (a broker may auto-create them)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        response = await admin.create_topics(topics)
        topic_already_exists = 36
        failures = [entry for entry in response.topic_errors if entry[1] not in (0, topic_already_exists)]
        if failures:
            raise RuntimeError(f"could not create topics: {failures}")
    finally:
        await admin.close()


class RedeliverProcess(WorkerProcess):
    """`python -m worker redeliver` (the redelivery loop alone) as a real process."""

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", "redeliver"], env=self._env, stderr=log
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid
