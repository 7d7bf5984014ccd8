"""Prometheus metrics, and the HTTP endpoints ops probe: /metrics, /healthz, /readyz.

/healthz answers 200 while every loop of the process (the consumer loop, the redelivery
loop) has made progress recently; /readyz answers 200 when MongoDB has answered, every
server is reachable and the consumer holds an assignment, else 503 with the reasons as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
import structlog
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from worker.errors import WorkerError

log = structlog.get_logger(__name__)

# No `<counter>_created` twin per series: it doubles the series count and no alert reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

RECORDS_CONSUMED = Counter("persistence_records_consumed_total", "Records polled from Kafka", ["route"])
RECORDS_STORED = Counter(
    "persistence_records_stored_total", "Records safely in MongoDB (new or already there)", ["route"]
)
RECORDS_DEAD_LETTERED = Counter(
    "persistence_records_dead_lettered_total", "Records sent to a dead-letter topic", ["route", "error_type"]
)
PERSIST_FAILURES = Counter(
    "persistence_persist_failures_total", "Bulk writes that failed after the retries", ["route", "policy"]
)
WRITE_RETRIES = Counter("persistence_write_retries_total", "MongoDB write attempts retried", ["collection"])
BATCH_SIZE = Histogram(
    "persistence_batch_records",
    "Records per bulk write",
    ["route"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 5000),
)
WRITE_LATENCY = Histogram(
    "persistence_write_duration_seconds", "Bulk write duration, retries included", ["route"]
)
CONSUMER_LAG = Gauge(
    "persistence_consumer_lag_records",
    "Records of a partition not yet committed: log end offset (high watermark) minus committed offset",
    ["topic", "partition"],
)
BUFFER_PENDING = Gauge(
    "persistence_telemetry_buffer_pending", "telemetry_buffer documents still to deliver (not parked)"
)
BUFFER_PARKED = Gauge(
    "persistence_telemetry_buffer_parked", "telemetry_buffer documents parked (no more delivery attempts)"
)
BUFFER_OLDEST_PENDING_AGE = Gauge(
    "persistence_telemetry_buffer_oldest_pending_age_seconds",
    "Age (from buffered_at) of the oldest telemetry_buffer document still to deliver; 0 when none",
)
# ---- ops metrics (issue 13): alerts and dashboard in deploy/prometheus, deploy/grafana ----
BUILD_INFO = Gauge(
    "persistence_build_info",
    "Always 1; the labels say which worker and libraries run",
    ["version", "python", "aiokafka", "pymongo"],
)
READY = Gauge(
    "persistence_ready",
    "1 while /readyz would answer 200 (MongoDB answered, partitions held), else 0",
    registry=None,  # absent until track_readiness() wires it: an unwired 0 would fire an alert
)
RECORDS_SKIPPED = Counter(
    "persistence_records_skipped_total",
    "Records already in MongoDB (redelivered) or stale (an older workflow result); also counted as stored",
    ["route"],
)
BATCHES_FAILED = Counter(
    "persistence_batches_failed_total", "Batches that could not be finished (batch_failed); nothing committed"
)
COMMITS_FAILED = Counter(
    "persistence_commits_failed_total", "Offset commits refused by the group (commit_failed, a rebalance)"
)
LAST_COMMIT_TIMESTAMP = Gauge(
    "persistence_consumer_last_commit_timestamp_seconds",
    "Unix time of this replica's last successful offset commit, per assigned partition",
    ["topic", "partition"],
)
INDEXES_MISSING = Gauge(
    "persistence_indexes_missing",
    "Expected indexes absent from a collection at the last periodic index check",
    ["collection"],
)
INDEX_CONFLICTS = Gauge(
    "persistence_index_conflicts",
    "Indexes with the expected keys but other options at the last periodic index check",
    ["collection"],
)
INDEX_CHECK_TIMESTAMP = Gauge(
    "persistence_index_check_last_success_timestamp_seconds",
    "Unix time of the last periodic index check that could read every collection's indexes",
)


def track_readiness(ready: Callable[[], bool]) -> None:
    """Export `persistence_ready`, read from `ready` at each scrape (e.g. `Health.ready`)."""
    READY.set_function(lambda: 1.0 if ready() else 0.0)
    with contextlib.suppress(ValueError):  # registered by an earlier call
        REGISTRY.register(READY)


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def publish_build_info() -> None:
    """Set `persistence_build_info` once: this worker's version, Python's, aiokafka's and PyMongo's."""
    BUILD_INFO.labels(
        version=_version("persistence-worker"),
        python=platform.python_version(),
        aiokafka=_version("aiokafka"),
        pymongo=_version("pymongo"),
    ).set(1)


publish_build_info()
# ---- end of ops metrics ----

SERVER_UP = Gauge(
    "persistence_server_up", "1 while the server answers the worker's probes, else 0", ["server"]
)
LOG_LINES_DROPPED = Counter(
    "persistence_log_lines_dropped_total", "Log lines that could not be written (closed pipe, full disk)"
)


class _Record(Protocol):
    @property
    def offset(self) -> int: ...


class _LagSource(Protocol):
    """The part of AIOKafkaConsumer the lag gauge reads."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...


class CommitLag:
    """`persistence_consumer_lag_records` per assigned partition: high watermark minus committed offset.

    The committed offset is the one this consumer last committed; before its first commit on a
    partition, the offset it started reading from (the group's commit, or the reset position).
    """

    def __init__(self) -> None:
        self._committed: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}

    def saw(self, batch: Mapping[TopicPartition, Sequence[_Record]]) -> None:
        """A polled batch: a partition's first records start where its committed offset is.

        The gauge counts the batch in hand at once: a batch that never finishes (a write that
        hangs) must show as lag, not as the 0 published after the last commit.
        """
        for tp, records in batch.items():
            if records:
                self._committed.setdefault(tp, records[0].offset)
                highwater = max(records[-1].offset + 1, self._highwater.get(tp, 0))
                lag = max(highwater - self._committed[tp], 0)
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Offsets this consumer committed just now: also the partitions' last commit time."""
        self._committed.update(offsets)
        now = time.time()
        for tp in offsets:
            LAST_COMMIT_TIMESTAMP.labels(topic=tp.topic, partition=str(tp.partition)).set(now)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked partitions: their lag is another member's now."""
        for tp in partitions:
            self._committed.pop(tp, None)
            self._highwater.pop(tp, None)
            for gauge in (CONSUMER_LAG, LAST_COMMIT_TIMESTAMP):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    async def publish(self, consumer: _LagSource) -> None:
        """Set the gauge of every assigned partition whose high watermark is known."""
        for tp in consumer.assignment():
            try:
                highwater = consumer.highwater(tp)
                if highwater is None:  # not fetched yet
                    continue
                if tp not in self._committed:
                    # Fetched, but no record handed out yet: the position is still the committed offset.
                    self._committed[tp] = await consumer.position(tp)
            except (AssertionError, KafkaError, WorkerError):  # revoked meanwhile: the listener forgets it
                continue
            self._highwater[tp] = highwater
            lag = max(highwater - self._committed[tp], 0)
            CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


class Liveness:
    """A loop's heartbeat: `beat(expect_next_within_s)` before any wait or bounded piece of work.

    The loop counts as stuck once `stuck_after_s` have passed beyond the time it said it would
    beat again, so a long planned backoff is never mistaken for a hang.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due = clock()

    def beat(self, expect_next_within_s: float = 0.0) -> None:
        self._due = self._clock() + max(expect_next_within_s, 0.0)

    def overdue_s(self) -> float:
        return self._clock() - self._due


@dataclass
class Health:
    """What the probes read; the app updates it."""

    last_poll: Callable[[], float] | None
    """The consumer loop's last poll (monotonic); None where the process runs no consumer."""
    mongodb_ready: Callable[[], bool]
    has_assignment: Callable[[], bool]
    stuck_after_s: float = 120.0
    loops: Mapping[str, Liveness] = field(default_factory=dict)
    """Other loops of the process by name (e.g. "redelivery")."""
    unreachable: Callable[[], list[dict[str, str]]] = list
    """The servers not answering now, each with `server`, `address`, `since` and `error`."""

    def stuck_loops(self) -> list[str]:
        stuck = [name for name, loop in self.loops.items() if loop.overdue_s() >= self.stuck_after_s]
        if self.last_poll is not None and time.monotonic() - self.last_poll() >= self.stuck_after_s:
            stuck.insert(0, "consumer")
        return stuck

    def alive(self) -> bool:
        return not self.stuck_loops()

    def ready(self) -> bool:
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[dict[str, str]]:
        """Why the process is not ready; empty when it is."""
        reasons = self.unreachable()
        if not self.mongodb_ready() and not any(r.get("server") == "mongodb" for r in reasons):
            reasons.append({"reason": "mongodb_not_reached_yet"})
        if not self.has_assignment():
            reasons.append({"reason": "no_partition_assigned"})
        return reasons


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def respond(path: str, health: Health) -> bytes:
    """The whole HTTP response for `path`."""
    if path == "/metrics":
        return _response(200, generate_latest(), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        stuck = health.stuck_loops()
        if stuck:
            return _response(503, "".join(f"{name} loop stuck\n" for name in stuck).encode())
        return _response(200, b"ok\n")
    if path == "/readyz":
        reasons = health.not_ready_reasons()
        if not reasons:
            return _response(200, b"ready\n")
        body = orjson.dumps({"ready": False, "reasons": reasons}) + b"\n"
        return _response(503, body, "application/json")
    return _response(404, b"not found\n")


async def start_http(host: str, port: int, health: Health) -> asyncio.Server:
    """Listen on `host:port` for the three endpoints; OSError (e.g. address in use) is the caller's."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):  # a broken probe connection must not hurt the worker
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            writer.write(respond(path, health))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host=host, port=port)
    log.info("http_listening", host=host, port=port, paths=["/metrics", "/healthz", "/readyz"])
    return server


async def serve_until(server: asyncio.Server, stop: asyncio.Event) -> None:
    """Serve on the bound `server` until `stop` is set, then close it."""
    async with server:
        await stop.wait()


async def serve_http(port: int, health: Health, stop: asyncio.Event, host: str = "0.0.0.0") -> None:
    """Serve the three endpoints on `host:port` until `stop` is set."""
    await serve_until(await start_http(host, port, health), stop)
