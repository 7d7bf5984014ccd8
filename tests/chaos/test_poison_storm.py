"""A poison-record storm: thousands of malformed records (hypothesis-generated, see poison.py)
mixed with good ones, some of those carrying NUL characters, dotted keys and astral-plane text
in their values, and about one in a hundred timestamped at the first or last representable UTC
instant; the hand-written edge cases of poison.py (`edge_poison`) on every route. Each poison
record is dead-lettered with the reason it was built for (any `validation` reason for the
instants beyond the range and the lone surrogate); each good event is stored exactly once. The
redelivery loop runs, so delivered telemetry counts as stored (invariant.py)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import Published, check_invariant, expected_document_id, good_events, publish_all
from tests.chaos.poison import FREE_FORM, TIMESTAMP_FIELD, edge_poison, generate_poison
from tests.chaos.support import chaos_settings, committed_or_stalled, good_count, prepare_chaos_topics
from tests.integration.harness import WorkerProcess
from tests.support.servers import ServerKinds
from worker.settings import RouteName

MAX_EVENT_BYTES = 8192


def with_odd_but_legal_values(record: Published) -> Published:
    """The same good event with NUL in a value, a dotted key and astral-plane text: all storable."""
    payload = orjson.loads(record.value)
    payload[FREE_FORM[record.route]].update({"note": "nul\x00inside \U0001f600", "disk.used_pct": 12.5})
    return replace(record, value=orjson.dumps(payload),
                   document_id=expected_document_id(record.route, payload))  # fmt: skip


def at_range_edges(record: Published, index: int) -> Published:
    """The same good event timestamped at the first or the last representable UTC instant: storable."""
    payload = orjson.loads(record.value)
    payload[TIMESTAMP_FIELD[record.route]] = IN_RANGE[index % 2]
    return replace(record, value=orjson.dumps(payload),
                   document_id=expected_document_id(record.route, payload))  # fmt: skip


IN_RANGE = ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z")


def storm(run: str, *, poison_count: int, good_count_: int, seed: int) -> list[Published]:
    """Good events and poison records, shuffled with a fixed seed."""
    good = good_events(run, good_count_, seed=seed)
    good = [with_odd_but_legal_values(r) if i % 5 == 0 else r for i, r in enumerate(good)]
    good = [at_range_edges(r, i) if i % 97 == 1 else r for i, r in enumerate(good)]
    generated = generate_poison(poison_count, max_bytes=MAX_EVENT_BYTES, max_depth=64)
    edges = [p for route in RouteName for p in edge_poison(route)]
    poison = [
        Published(f"{run}-poison-{i}", p.route, p.value, key=f"poison-{i}".encode(), expected_reason=p.reason)
        for i, p in enumerate(generated + edges)
    ]
    records = good + poison
    random.Random(seed).shuffle(records)
    return records


async def test_poison_storm_is_dead_lettered_and_good_events_are_stored_once(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds,
    chaos_result: Record,
) -> None:  # fmt: skip
    """Thousands of malformed records (huge up to 1.5 MB, deeply nested, non-UTF-8, `$`/NUL keys, 23-digit integers, instants beyond year 1 and 9999 in UTC, ...) among good events on every route: each poison record is dead-lettered for its reason, each good event stored once, nothing else stored."""
    settings = chaos_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                              max_event_bytes=MAX_EVENT_BYTES, kafka_max_batch_records=500)  # fmt: skip
    await prepare_chaos_topics(create_topics, settings)
    records = storm(unique_name, poison_count=scale.pick(2000, 10_000), good_count_=scale.pick(2000, 10_000),
                    seed=81)  # fmt: skip
    await publish_all(settings, records)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    stalled = await committed_or_stalled(
        settings, len(records), within=scale.pick(240, 900), stalled_after=30
    )
    assert worker.terminate() == 0
    verdict = await check_invariant(settings, mongo_db, records)
    chaos_result("poison-record storm (edge cases on every route)", verdict.counts,
                 servers=servers_label(server_kind))  # fmt: skip
    assert stalled is None, f"{stalled}; {verdict.explain()}"
    assert verdict.holds, verdict.explain()
    assert verdict.counts.stored == good_count(records)
    assert verdict.counts.dead_lettered == len(records) - good_count(records)
    assert verdict.counts.duplicates == 0
    assert verdict.wrong_reasons(records) == []
    assert set(verdict.error_types) == {"validation"}
