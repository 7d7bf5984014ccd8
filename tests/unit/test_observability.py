"""The probe endpoints and the metrics they expose."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from worker.errors import TransientError
from worker.observability import Health, respond, serve_http
from worker.retry import with_retries
from worker.settings import Settings


def health(*, polled_ago: float = 0.0, mongodb: bool = True, assigned: bool = True) -> Health:
    import time

    return Health(last_poll=lambda: time.monotonic() - polled_ago, mongodb_ready=lambda: mongodb,
                  has_assignment=lambda: assigned, stuck_after_s=60)  # fmt: skip


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_healthz_fails_when_the_consumer_loop_has_not_polled_for_too_long() -> None:
    """/healthz is 200 after a recent poll and 503 once the loop looks stuck."""
    assert status_of(respond("/healthz", health(polled_ago=1))) == 200
    assert status_of(respond("/healthz", health(polled_ago=600))) == 503


def test_readyz_needs_both_mongodb_and_an_assignment() -> None:
    """/readyz is 200 only when MongoDB answered and partitions are assigned."""
    assert status_of(respond("/readyz", health())) == 200
    assert status_of(respond("/readyz", health(mongodb=False))) == 503
    assert status_of(respond("/readyz", health(assigned=False))) == 503


def test_unknown_paths_are_not_found() -> None:
    """Anything but the three endpoints answers 404."""
    assert status_of(respond("/admin", health())) == 404


async def test_each_retry_is_counted_in_the_metrics() -> None:
    """`persistence_write_retries_total` rises by one per retried attempt."""
    settings = Settings(retry_max_attempts=3, retry_initial_interval_ms=0, retry_backoff_coefficient=0.0001)
    before = (
        REGISTRY.get_sample_value("persistence_write_retries_total", {"collection": "metrics_test"}) or 0.0
    )
    calls = 0

    async def flaky(_: None) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("down")
        return "ok"

    assert await with_retries(settings, "metrics_test", flaky, None) == "ok"
    after = REGISTRY.get_sample_value("persistence_write_retries_total", {"collection": "metrics_test"})
    assert after == before + 2


async def test_metrics_endpoint_serves_prometheus_text_over_http() -> None:
    """GET /metrics over a real socket answers Prometheus text with the worker's counters."""
    from worker.demo.servers import free_port

    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_http(port, health(), stop))
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = await reader.read()
    writer.close()
    stop.set()
    await server
    assert body.startswith(b"HTTP/1.1 200 OK")
    assert b"# TYPE persistence_records_consumed_total counter" in body
