"""`make demo`: local servers, the real worker process, a few hundred events, what landed.

Uses the servers named by KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI when both are set,
otherwise starts the stand-ins (tansu, nx-27017) on free loopback ports. With KEEP=1
(`make demo KEEP=1`) or `--keep`, the stand-ins stay up afterwards, until Ctrl-C, and the
commands to try on the demo's data are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from tests.demo.keep import keep_requested, program, try_it, wait_for_ctrl_c
from tests.demo.publish import ensure_topics, publish, read_dead_letters
from tests.demo.tables import (
    COUNTERS_LEGEND,
    counters_table,
    event_counts,
    format_table,
    outcome_label,
    route_counters,
    sample_line,
)
from tests.support.events import DemoEvent, EventFactory
from tests.support.routes import COLLECTION
from tests.support.standins import LocalKafka, LocalMongo, free_port
from worker.mongo import queries
from worker.settings import RouteName, Settings

EVENTS = 600
MALFORMED_RATIO = 0.08
DUPLICATES = 60
WORK_DIR = Path("demo-data")
HASH_SHOWN = 16
"""Hex digits of validation_audit.hash shown (the whole sha256 has 64)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What the demo publishes, and so what must land."""

    published: Counter[RouteName]
    documents: Counter[RouteName]
    duplicates: Counter[RouteName]
    malformed: int


@dataclass(frozen=True, slots=True)
class Landed:
    """What the worker did, read from MongoDB, the dead-letter topics and /metrics."""

    documents: dict[str, int]
    dead_letters: int
    counters: dict[str, dict[str, int]]


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str, bool]]:
    """(bootstrap, mongo uri, started here): from the environment, or stand-ins started here."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URI"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"], False
        return
    with LocalKafka(log_dir=WORK_DIR) as kafka, LocalMongo(log_dir=WORK_DIR) as mongo:
        print(f"started stand-ins: tansu (Kafka) on {kafka.bootstrap}, nx-27017 (MongoDB) on {mongo.uri}")
        yield kafka.bootstrap, mongo.uri, True


def demo_events() -> tuple[list[DemoEvent], Expected]:
    """The events to publish (the good ones' first DUPLICATES sent twice), and what must land."""
    events = list(EventFactory(seed=2026).stream(EVENTS, malformed_ratio=MALFORMED_RATIO))
    good = [event for event in events if event.valid]
    again = good[:DUPLICATES]
    expected = Expected(
        published=Counter(event.route for event in events + again),
        documents=Counter(event.route for event in good),
        duplicates=Counter(event.route for event in again),
        malformed=len(events) - len(good),
    )
    return events + again, expected


def show(lines: Sequence[str]) -> None:
    print("\n" + "\n".join(lines))


def fetch_page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        page: bytes = response.read()
    return page.decode()


async def read_counters(port: int) -> dict[str, dict[str, int]]:
    """The per-route counters of the worker's /metrics (none while it is not listening yet)."""
    try:
        page = await asyncio.to_thread(fetch_page, f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return {}
    return route_counters(page)


def settled(landed: Landed, expected: Expected) -> bool:
    """Every published record counted by the worker, every dead letter readable."""
    for route, published in expected.published.items():
        counters = landed.counters.get(route.value, {})
        done = counters.get("stored", 0) + counters.get("dead_lettered", 0)
        if counters.get("consumed") != published or done != published:
            return False
    return landed.dead_letters >= expected.malformed


async def wait_for_landing(
    db: Any, settings: Settings, port: int, expected: Expected, limit_s: float = 90
) -> Landed:
    started = time.monotonic()
    while True:
        # The counters first: a record is counted once written, so the documents read after are there.
        counters = await read_counters(port)
        landed = Landed(
            documents={name: await db[name].count_documents({}) for name in COLLECTION.values()},
            dead_letters=len(await read_dead_letters(settings, idle_ms=300)),
            counters=counters,
        )
        if settled(landed, expected) or time.monotonic() - started > limit_s:
            return landed
        await asyncio.sleep(0.2)


def show_landed(landed: Landed, expected: Expected, port: int) -> None:
    rows = [(name, landed.documents[name], expected.documents[route]) for route, name in COLLECTION.items()]
    show(format_table("Documents per collection", ("collection", "documents", "expected"), rows))
    print(f"\nDead-lettered: {landed.dead_letters} (expected {expected.malformed}, the malformed events)")
    title = (
        f"Counters per route, from GET http://127.0.0.1:{port}/metrics (persistence_records_<counter>_total)"
    )
    show(counters_table(title, landed.counters))
    duplicates = ", ".join(f"{route.value} {count}" for route, count in sorted(expected.duplicates.items()))
    print("\n".join(f"  {line}" for line in (*COUNTERS_LEGEND, f"duplicates sent: {duplicates}")))


async def show_queries(db: Any) -> str:
    """The guide's queries on the demo's data, as the CLI runs them; returns the plan shown."""
    outcome = await queries.validations_by_outcome(db)
    show(format_table("Validations by outcome (`query validations`: $group on validation_result.valid)",
                      ("outcome", "validations"), [(outcome_label(r["_id"]), r["total"]) for r in outcome]))  # fmt: skip
    violations = await queries.workflows_with_sla_violations(db, limit=5)
    show(format_table("Workflows with SLA violations, latest 5 (`query sla-violations`)",
                      ("workflow", "status", "violations"),
                      [(d["_id"], d["status"], d["sla_status"]["violations_count"]) for d in violations]))  # fmt: skip
    critical = await queries.recent_incidents(db, "CRITICAL", limit=5)
    show(format_table("Recent CRITICAL incidents, 5 (`query incidents`)", ("workflow", "type", "timestamp"),
                      [(d["workflow_id"], d["type"], d["timestamp"].isoformat()) for d in critical]))  # fmt: skip
    by_type = await queries.incidents_by_type(db)
    show(format_table("Incidents by type (`query incident-types`)", ("type", "incidents"),
                      [(row["_id"], row["total"]) for row in by_type]))  # fmt: skip
    failed = await queries.workflows_by_status(db, "FAILED", limit=3)
    show(format_table("FAILED workflows, 3 (`query workflows`)", ("workflow", "plan"),
                      [(d["_id"], d["plan_id"]) for d in failed]))  # fmt: skip
    plan_id: str = (await db.validation_audit.find_one({}, sort=[("timestamp", -1)]))["plan_id"]
    await show_plan_history(db, plan_id)
    return plan_id


async def show_plan_history(db: Any, plan_id: str) -> None:
    history = await queries.plan_validation_history(db, plan_id, limit=3)
    rows = [
        (d["timestamp"].isoformat(), outcome_label(d["validation_result"]["valid"]), d["hash"][:HASH_SHOWN])
        for d in history
    ]
    show(format_table(f"Validation history of {plan_id}, newest 3 (`query plan-history`)",
                      ("timestamp", "outcome", f"result hash (first {HASH_SHOWN} hex)"), rows))  # fmt: skip
    print("  result hash: sha256 of the validation_result; the same hash means the same result.")
    retried = await queries.telemetry_with_retries(db)
    print(f"\nTelemetry with retries: {len(retried)} (redelivery has not run yet)")


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`persistence-worker run` in a child process; stopped (SIGTERM) on the way out if still running."""
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stderr=log_file)
        try:
            yield worker
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)


def redeliver_once(env: dict[str, str]) -> int:
    """What ops would run: deliver the buffered telemetry now (`telemetry redeliver --once`)."""
    topic = env.get("KAFKA_TELEMETRY_DELIVERY_TOPIC", "observability.telemetry")
    print(f"\n$ persistence-worker telemetry redeliver --once   # buffered telemetry to {topic}")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "telemetry", "redeliver", "--once"],
        env={**env, "HTTP_PORT": "0"}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(done.stdout.strip() or done.stderr.strip())
    return done.returncode


def show_log_samples(log_path: Path) -> None:
    """The worker's log lines by event, and two of them whole."""
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    show(format_table(f"Worker log lines by event ({log_path})", ("event", "lines"), event_counts(lines)))
    samples = (
        ("A canonical line, one per partition of a batch written (its stored: written by this batch;"
         " skipped: its duplicates; the stored counter above counts both)", "workflow_result_saved"),
        ("A rejected event (it went to the dead-letter topic)", "event_rejected"),
    )  # fmt: skip
    for what, event in samples:
        sample = sample_line(lines, event)
        if sample is not None:
            print(f"\n{what}:\n{orjson.dumps(sample).decode()}")


def demo_environment(bootstrap: str, mongo_uri: str, http_port: int) -> dict[str, str]:
    return {
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


def verdict(landed: Landed, expected: Expected) -> bool:
    """Every event stored once or dead-lettered, every duplicate skipped, on every route."""
    stored_once = all(landed.documents[COLLECTION[r]] == n for r, n in expected.documents.items())
    skipped = all(
        landed.counters.get(r.value, {}).get("skipped") == n for r, n in expected.duplicates.items()
    )
    return stored_once and skipped and landed.dead_letters == expected.malformed


async def observe(
    settings: Settings, mongo_uri: str, port: int, expected: Expected
) -> tuple[Landed, str, bool]:
    """Wait for the worker, show what landed and the guide's queries, deliver the telemetry buffer;
    (what landed, a plan to query, the buffer delivered and empty)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[settings.mongodb_database]
        landed = await wait_for_landing(db, settings, port, expected)
        show_landed(landed, expected, port)
        plan_id = await show_queries(db)
        redelivered = redeliver_once(dict(os.environ))
        left = await db.telemetry_buffer.count_documents({"state": None})
        print(f"telemetry_buffer after delivery: {left} documents")
    finally:
        await client.close()
    return landed, plan_id, redelivered == 0 and left == 0


async def run_demo(bootstrap: str, mongo_uri: str) -> tuple[bool, str]:
    """The whole demo on these servers; (it went as expected, a plan to query)."""
    events, expected = demo_events()
    http_port = free_port()
    os.environ.update(demo_environment(bootstrap, mongo_uri, http_port))
    settings = Settings()
    await ensure_topics(settings)
    log_path = WORK_DIR / "worker.log"
    with running_worker(dict(os.environ), log_path) as worker:
        print(f"worker started (pid {worker.pid}): `persistence-worker run`, its log in {log_path}")
        sent = await publish(settings, events)
        good = sum(expected.documents.values())
        print(
            f"published {sent} events: {good} good, {expected.malformed} malformed, {DUPLICATES} sent twice"
        )
        landed, plan_id, delivered = await observe(settings, mongo_uri, http_port, expected)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    print(f"\nworker stopped on SIGTERM with exit code {code}")
    show_log_samples(log_path)
    ok = verdict(landed, expected) and code == 0 and delivered
    print("\nDEMO OK: every event stored once or dead-lettered, every duplicate skipped" if ok
          else "\nDEMO FAILED: counts differ")  # fmt: skip
    return ok, plan_id


def main(argv: Sequence[str]) -> int:
    keep = keep_requested(argv, os.environ)
    WORK_DIR.mkdir(exist_ok=True)
    with servers() as (bootstrap, mongo_uri, started_here):
        ok, plan_id = asyncio.run(run_demo(bootstrap, mongo_uri))
        if keep:
            show(try_it(bootstrap, mongo_uri, plan_id=plan_id, program=program()))
        if keep and started_here:
            print("\nThe stand-ins stay up until Ctrl-C (KEEP=1).")
            wait_for_ctrl_c()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
