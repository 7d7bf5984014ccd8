"""`make demo`: local servers, the real worker process, a few hundred events, what landed.

Uses the servers named by KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI when both are set,
otherwise starts the stand-ins (tansu, nx-27017) on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from tests.demo.events import DemoEvent, EventFactory
from tests.demo.publish import ensure_topics, publish, read_dead_letters
from tests.standins import LocalKafka, LocalMongo, free_port
from worker.mongo import queries
from worker.settings import RouteName, Settings

EVENTS = 600
MALFORMED_RATIO = 0.08
DUPLICATES = 60
COLLECTIONS = {
    RouteName.VALIDATION: "validation_audit",
    RouteName.RESULTS: "workflow_results",
    RouteName.INCIDENTS: "incidents",
    RouteName.TELEMETRY: "telemetry_buffer",
}
WORK_DIR = Path("demo-data")


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """(bootstrap, mongo uri): from the environment, or stand-ins started here."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URI"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"]
        return
    with LocalKafka(log_dir=WORK_DIR) as kafka, LocalMongo(log_dir=WORK_DIR) as mongo:
        print(f"started stand-ins: tansu on {kafka.bootstrap}, nx-27017 on {mongo.uri}")
        yield kafka.bootstrap, mongo.uri


def demo_events() -> tuple[list[DemoEvent], Counter[RouteName], int]:
    """The events to publish (with redeliveries), the expected documents per route, the bad ones."""
    events = list(EventFactory(seed=2026).stream(EVENTS, malformed_ratio=MALFORMED_RATIO))
    good = [event for event in events if event.valid]
    expected = Counter(event.route for event in good)
    return events + good[:DUPLICATES], expected, len(events) - len(good)


async def wait_for_landing(
    db: Any, settings: Settings, expected: Counter[RouteName], malformed: int, limit_s: float = 90
) -> tuple[dict[str, int], int, float]:
    started = time.monotonic()
    while True:
        counts = {name: await db[name].count_documents({}) for name in COLLECTIONS.values()}
        dead = len(await read_dead_letters(settings, idle_ms=300))
        done = all(counts[COLLECTIONS[r]] >= n for r, n in expected.items()) and dead >= malformed
        if done or time.monotonic() - started > limit_s:
            return counts, dead, time.monotonic() - started
        await asyncio.sleep(0.2)


def print_table(title: str, rows: list[tuple[Any, ...]]) -> None:
    print(f"\n{title}")
    for row in rows:
        print("  " + "  ".join(f"{cell!s:<28}" for cell in row).rstrip())


async def show_queries(db: Any) -> None:
    outcome = await queries.validations_by_outcome(db)
    print_table(
        "Validations by outcome  (guide: $group on validation_result.valid)",
        [(f"valid={row['_id']}", row["total"]) for row in outcome],
    )
    violations = await queries.workflows_with_sla_violations(db, limit=5)
    print_table(
        "Workflows with SLA violations (latest 5)",
        [(d["_id"], d["status"], f"violations={d['sla_status']['violations_count']}") for d in violations],
    )
    critical = await queries.recent_incidents(db, "CRITICAL", limit=5)
    print_table(
        "Recent CRITICAL incidents (5)",
        [(d["workflow_id"], d["type"], d["timestamp"].isoformat()) for d in critical],
    )
    print_table(
        "Incidents by type", [(row["_id"], row["total"]) for row in await queries.incidents_by_type(db)]
    )
    failed = await queries.workflows_by_status(db, "FAILED", limit=3)
    print_table("FAILED workflows (3)", [(d["_id"], d["plan_id"]) for d in failed])
    plan_id = (await db.validation_audit.find_one({}, sort=[("timestamp", -1)]))["plan_id"]
    history = await queries.plan_validation_history(db, plan_id, limit=3)
    print_table(
        f"{plan_id} validation history (newest 3)",
        [
            (d["timestamp"].isoformat(), f"valid={d['validation_result']['valid']}", d["hash"][:16])
            for d in history
        ],
    )
    retried = await queries.telemetry_with_retries(db)
    print(f"\nTelemetry with retries: {len(retried)} (redelivery has not run yet)")


async def show_metrics(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: demo\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    lines = [line for line in body.splitlines() if line.startswith("persistence_") and "_total{" in line]
    print(f"\nGET http://127.0.0.1:{port}/metrics (counters):")
    for line in lines:
        print(f"  {line}")


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stderr=log_file)


def redeliver_once(env: dict[str, str]) -> int:
    """What ops would run: deliver the buffered telemetry now (`telemetry redeliver --once`)."""
    topic = env.get("KAFKA_TELEMETRY_DELIVERY_TOPIC", "observability.telemetry")
    print(f"\n$ persistence-worker telemetry redeliver --once   # buffered telemetry to {topic}")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "telemetry", "redeliver", "--once"],
        env={**env, "HTTP_PORT": "0"}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(done.stdout.strip() or done.stderr.strip()[-500:])
    return done.returncode


def show_log_samples(log_path: Path) -> None:
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    kinds = Counter(line["event"] for line in lines)
    print("\nWorker log lines by event:", dict(sorted(kinds.items())))
    for wanted in ("validation_audit_saved", "event_rejected"):
        sample = next((line for line in lines if line["event"] == wanted), None)
        if sample:
            print(f"  e.g. {orjson.dumps(sample).decode()[:300]}")


async def main() -> int:
    WORK_DIR.mkdir(exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    events, expected, malformed = demo_events()
    http_port = free_port()
    with servers() as (bootstrap, mongo_uri):
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MONGODB_URI": mongo_uri,
            "LOG_FORMAT": "json",
            "KAFKA_CONSUMER_GROUP": f"demo-{os.getpid()}",
            "HTTP_PORT": str(http_port),
            # The demo shows the buffer first, then delivers it with `telemetry redeliver --once` (below),
            # so the worker's own redelivery loop is off and the counts stay still meanwhile.
            "REDELIVERY_ENABLED": "false",
        }
        os.environ.update(env)
        settings = Settings()
        await ensure_topics(settings)
        log_path = WORK_DIR / "worker.log"
        worker = start_worker(env, log_path)
        print(f"worker started (pid {worker.pid}), logs in {log_path}")
        started = time.monotonic()
        sent = await publish(settings, events)
        print(
            f"published {sent} events: {sum(expected.values())} good, {malformed} malformed, "
            f"{DUPLICATES} redelivered duplicates"
        )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
        db = client[settings.mongodb_database]
        counts, dead, _ = await wait_for_landing(db, settings, expected, malformed)
        elapsed = time.monotonic() - started
        print_table(
            "Documents per collection (expected)",
            [(name, counts[name], f"({expected[route]})") for route, name in COLLECTIONS.items()],
        )
        print(f"\nDead-lettered: {dead} (expected {malformed}); {sent / elapsed:.0f} events/s end to end")
        await show_queries(db)
        await show_metrics(http_port)
        redelivered = redeliver_once(env)
        left = await db.telemetry_buffer.count_documents({"state": None})
        print(f"telemetry_buffer after delivery: {left} documents")
        await client.close()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        print(f"\nworker stopped on SIGTERM with exit code {code}")
        show_log_samples(log_path)
        ok = all(counts[COLLECTIONS[r]] == n for r, n in expected.items()) and dead == malformed and code == 0
        ok = ok and redelivered == 0 and left == 0
        print("\nDEMO OK: every event stored once or dead-lettered" if ok else "\nDEMO FAILED: counts differ")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
