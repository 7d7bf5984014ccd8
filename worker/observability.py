"""Prometheus metrics, and the HTTP endpoints ops probe: /metrics, /healthz, /readyz.

/healthz answers 200 while the consumer loop has polled within `stuck_after_s`;
/readyz answers 200 when MongoDB has answered and the consumer holds an assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

log = structlog.get_logger(__name__)

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


@dataclass
class Health:
    """What the probes read; the app updates it."""

    last_poll: Callable[[], float]
    mongodb_ready: Callable[[], bool]
    has_assignment: Callable[[], bool]
    stuck_after_s: float = 120.0

    def alive(self) -> bool:
        return time.monotonic() - self.last_poll() < self.stuck_after_s

    def ready(self) -> bool:
        return self.mongodb_ready() and self.has_assignment()


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
        alive = health.alive()
        return _response(200 if alive else 503, b"ok\n" if alive else b"consumer loop stuck\n")
    if path == "/readyz":
        ready = health.ready()
        return _response(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
    return _response(404, b"not found\n")


async def serve_http(port: int, health: Health, stop: asyncio.Event) -> None:
    """Serve the three endpoints on `port` until `stop` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):  # a broken probe connection must not hurt the worker
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            writer.write(respond(path, health))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host="0.0.0.0", port=port)  # probes come from outside the pod
    log.info("http_listening", port=port, paths=["/metrics", "/healthz", "/readyz"])
    async with server:
        await stop.wait()
