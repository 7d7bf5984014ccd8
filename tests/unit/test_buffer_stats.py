"""Specification of the telemetry_buffer gauges (worker.telemetry.stats) without a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs

from tests.support.mongo import FakeCollection, FakeDatabase
from worker.mongo.gateway import gateway_for
from worker.settings import Settings
from worker.startup import reachability_for, start_watchers
from worker.telemetry.stats import BufferStats, age_s, publish, sample, sample_and_publish

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def gauges() -> tuple[float | None, ...]:
    names = ("pending", "parked", "oldest_pending_age_seconds")
    return tuple(REGISTRY.get_sample_value(f"persistence_telemetry_buffer_{name}") for name in names)


async def test_pending_parked_and_the_oldest_pending_age_are_counted() -> None:
    """Pending is every unparked document; the age is that of the oldest unparked `buffered_at`."""
    collection = FakeCollection([
        {"buffered_at": NOW - timedelta(seconds=90)},
        {"buffered_at": NOW - timedelta(seconds=30), "next_attempt_at": NOW},
        {"buffered_at": NOW - timedelta(seconds=500), "parked": True},
    ])  # fmt: skip
    stats = await sample(FakeDatabase(telemetry_buffer=collection), now=NOW)  # type: ignore[arg-type]
    assert stats == BufferStats(pending=2, parked=1, oldest_pending_age_s=90.0)


async def test_every_query_selects_on_parked_and_orders_by_buffered_at() -> None:
    """The queries have the claim index's shape: equality on `state` and `parked`, then `buffered_at` ascending; neither counts delivered tombstones."""
    collection = FakeCollection()
    await sample(FakeDatabase(telemetry_buffer=collection), now=NOW)  # type: ignore[arg-type]
    assert collection.queries == [
        ("count_documents", {"parked": None, "state": None}, None),
        ("count_documents", {"parked": True, "state": None}, None),
        ("find_one", {"parked": None, "state": None}, [("buffered_at", 1)]),
    ]


async def test_an_empty_buffer_has_no_age() -> None:
    """With nothing pending the oldest-pending age is 0."""
    stats = await sample(FakeDatabase(telemetry_buffer=FakeCollection()), now=NOW)  # type: ignore[arg-type]
    assert stats == BufferStats(pending=0, parked=0, oldest_pending_age_s=0.0)


@pytest.mark.parametrize(
    "stored",
    [
        NOW - timedelta(seconds=42),
        (NOW - timedelta(seconds=42)).replace(tzinfo=None),
        (NOW - timedelta(seconds=42)).isoformat(),
    ],
    ids=["aware", "naive UTC", "ISO text"],
)
def test_ages_of_any_stored_date_form(stored: object) -> None:
    """Dates come back aware, naive (UTC) or, from some servers, as text: all give the same age."""
    assert age_s(stored, NOW) == 42.0


def test_a_date_in_the_future_is_no_age() -> None:
    """Clock skew between replicas never makes a negative age."""
    assert age_s(NOW + timedelta(seconds=5), NOW) == 0.0


async def test_a_failed_sample_logs_one_warning_and_keeps_the_last_values() -> None:
    """MongoDB unreachable: one `telemetry_buffer_stats_failed` line; the gauges stay as they were."""
    publish(BufferStats(pending=7, parked=2, oldest_pending_age_s=12.5))
    broken = FakeDatabase(telemetry_buffer=FakeCollection(error=AutoReconnect("connection refused")))
    with capture_logs() as logs:
        assert await sample_and_publish(broken) is None  # type: ignore[arg-type]
    assert [line["event"] for line in logs] == ["telemetry_buffer_stats_failed"]
    assert "connection refused" in logs[0]["error"]
    assert gauges() == (7.0, 2.0, 12.5)


async def test_a_sample_sets_the_gauges() -> None:
    """A successful sample replaces the three values."""
    collection = FakeCollection([{"buffered_at": datetime.now(UTC) - timedelta(hours=1)}])
    stats = await sample_and_publish(FakeDatabase(telemetry_buffer=collection))  # type: ignore[arg-type]
    assert stats is not None
    pending, parked, age = gauges()
    assert (pending, parked) == (1.0, 0.0)
    assert age is not None and 3600 <= age < 3600 + 60


@pytest.mark.parametrize(("http_port", "sampled"), [(0, False), (8080, True)])
async def test_run_counts_the_buffer_only_when_it_serves_metrics(http_port: int, sampled: bool) -> None:
    """The gauges are read through /metrics alone: with HTTP_PORT=0 `run` never counts the
    buffer (a count over a large telemetry_buffer is work for MongoDB that nobody would read)."""
    settings = Settings(http_port=http_port, mongodb_uri="mongodb://127.0.0.1:9")
    stop = asyncio.Event()
    stop.set()
    gateway = gateway_for(settings)
    tasks = start_watchers(settings, reachability_for(settings, kafka=False), gateway, None, stop)
    try:
        assert ("buffer_stats" in {task.get_name() for task in tasks}) is sampled
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gateway.close()
