"""What the telemetry de-duplication window costs: bytes per tombstone, data and indexes, on WiredTiger.

`python -m tests.benchmarks.tombstone_cost` starts a SecantusDB of its own (MongoDB's storage
engine, WiredTiger, with collStats), creates the worker's indexes on `telemetry_buffer`, inserts
TOMBSTONES tombstones exactly as settling writes them (`_id`, `state`, `delivered_at`; the `_id`
of a demo telemetry event), and prints the BSON size of one, then collStats' data, storage and
per-index sizes divided by the count. docs/scaling.md multiplies these by the events a window holds.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import bson
from pymongo import MongoClient

from schemas.documents import document_id, telemetry_buffer_document
from schemas.events import TelemetryEvent
from tests.support.events import EventFactory
from tests.support.standins import LocalSecantus
from worker.mongo.indexes import EXPECTED_INDEXES
from worker.telemetry.buffer import DELIVERED

TOMBSTONES = 200_000
BATCH = 10_000


def tombstone(index: int, factory: EventFactory, now: datetime) -> dict[str, object]:
    event = TelemetryEvent.model_validate(factory.telemetry())
    key = document_id(event) if index % 2 else f"{document_id(event)[:8]}-{index}"  # hashed and event ids
    return {"_id": key, "state": DELIVERED, "delivered_at": now}


def main() -> None:
    factory, now = EventFactory(seed=7), datetime.now(UTC)
    pending = telemetry_buffer_document(TelemetryEvent.model_validate(factory.telemetry()), buffered_at=now)
    with LocalSecantus(log_dir=Path(tempfile.mkdtemp(prefix="tombstones-"))) as server:
        client: MongoClient[dict[str, object]] = MongoClient(server.uri)
        collection = client.cost.telemetry_buffer
        for spec in EXPECTED_INDEXES["telemetry_buffer"]:
            collection.create_index(list(spec.keys), sparse=spec.sparse)
        for start in range(0, TOMBSTONES, BATCH):
            collection.insert_many([tombstone(i, factory, now) for i in range(start, start + BATCH)])
        stats = client.cost.command("collStats", "telemetry_buffer")
        one = len(bson.encode(tombstone(1, factory, now)))
        print(
            f"tombstones: {TOMBSTONES:,}; BSON of one: {one} B (a pending document: {len(bson.encode(pending))} B)"
        )
        for key in ("size", "storageSize", "totalIndexSize"):
            print(f"  {key:<15} {stats[key] / TOMBSTONES:8.1f} B per tombstone")
        for name, size in sorted(stats.get("indexSizes", {}).items()):
            print(f"  index {name:<38} {size / TOMBSTONES:8.1f} B per tombstone")
        client.close()


if __name__ == "__main__":
    main()
