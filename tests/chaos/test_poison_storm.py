"""A poison-record storm: thousands of malformed records (hypothesis-generated, see poison.py)
mixed with good ones, some of those carrying NUL characters, dotted keys and astral-plane text
in their values. Each poison record is dead-lettered with the reason it was built for; each
good event is stored exactly once."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import Published, check_invariant, expected_document_id, good_events, publish_all
from tests.chaos.poison import generate_poison
from tests.chaos.support import QUICK_GROUP, good_count, wait_all_committed
from tests.conftest import ServerKinds
from tests.integration.harness import WorkerProcess, prepare_topics, settings_for
from worker.settings import RouteName

MAX_EVENT_BYTES = 8192
FREE_FORM = {
    RouteName.VALIDATION: "validation_result",
    RouteName.RESULTS: "metrics",
    RouteName.INCIDENTS: "details",
    RouteName.TELEMETRY: "metrics",
}


def with_odd_but_legal_values(record: Published) -> Published:
    """The same good event with NUL in a value, a dotted key and astral-plane text: all storable."""
    payload = orjson.loads(record.value)
    payload[FREE_FORM[record.route]].update({"note": "nul\x00inside \U0001f600", "disk.used_pct": 12.5})
    return replace(record, value=orjson.dumps(payload),
                   document_id=expected_document_id(record.route, payload))  # fmt: skip


def storm(run: str, *, poison_count: int, good_count_: int, seed: int) -> list[Published]:
    """Good events and poison records, shuffled with a fixed seed."""
    good = good_events(run, good_count_, seed=seed)
    good = [with_odd_but_legal_values(r) if i % 5 == 0 else r for i, r in enumerate(good)]
    poison = [
        Published(f"{run}-poison-{i}", p.route, p.value, key=f"poison-{i}".encode(), expected_reason=p.reason)
        for i, p in enumerate(generate_poison(poison_count, max_bytes=MAX_EVENT_BYTES, max_depth=64))
    ]
    records = good + poison
    random.Random(seed).shuffle(records)
    return records


async def test_poison_storm_is_dead_lettered_and_good_events_are_stored_once(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds,
    chaos_result: Record,
) -> None:  # fmt: skip
    """Thousands of malformed records (huge, deeply nested, non-UTF-8, `$`/NUL keys, ...) among good events: each poison record is dead-lettered for its reason, each good event stored once, nothing else stored."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                            max_event_bytes=MAX_EVENT_BYTES, kafka_max_batch_records=500, **QUICK_GROUP)  # fmt: skip
    await prepare_topics(create_topics, settings)
    records = storm(unique_name, poison_count=scale.pick(2000, 10_000), good_count_=scale.pick(2000, 10_000),
                    seed=81)  # fmt: skip
    await publish_all(settings, records)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    await wait_all_committed(settings, len(records), within=scale.pick(240, 900))
    assert worker.terminate() == 0
    verdict = await check_invariant(settings, mongo_db, records)
    chaos_result("poison-record storm", verdict.counts, servers=servers_label(server_kind))
    assert verdict.holds, verdict.explain()
    assert verdict.counts.stored == good_count(records)
    assert verdict.counts.dead_lettered == len(records) - good_count(records)
    assert verdict.counts.duplicates == 0
    assert verdict.wrong_reasons(records) == []
    assert set(verdict.error_types) == {"validation"}
