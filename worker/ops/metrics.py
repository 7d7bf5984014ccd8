"""The worker's Prometheus metrics, defined once; worker.ops.http serves them on /metrics."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

from worker.ops.about import installed_version, worker_version

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
WRITE_WAIT = Histogram(
    "persistence_write_wait_seconds",
    "Wait of a write attempt for a MongoDB write slot (MONGODB_WRITE_CONCURRENCY; higher routes first)",
    ["route"],
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
# The ops metrics below feed the alerts and dashboard in deploy/prometheus and deploy/grafana.
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


SERVER_UP = Gauge(
    "persistence_server_up", "1 while the server answers the worker's probes, else 0", ["server"]
)
LOG_LINES_DROPPED = Counter(
    "persistence_log_lines_dropped_total", "Log lines that could not be written (closed pipe, full disk)"
)


def track_readiness(ready: Callable[[], bool]) -> None:
    """Export `persistence_ready`, read from `ready` at each scrape (e.g. `Health.ready`)."""
    READY.set_function(lambda: 1.0 if ready() else 0.0)
    with contextlib.suppress(ValueError):  # registered by an earlier call
        REGISTRY.register(READY)


def publish_build_info() -> None:
    """Set `persistence_build_info` once: this worker's version, Python's, aiokafka's and PyMongo's."""
    BUILD_INFO.labels(
        version=worker_version(),
        python=platform.python_version(),
        aiokafka=installed_version("aiokafka"),
        pymongo=installed_version("pymongo"),
    ).set(1)


publish_build_info()
