"""MongoDB refusing writes with an authorization error (code 13, Unauthorized) mid-stream, then
healing: the fault proxy between the worker and MongoDB answers insert, update and findAndModify
with `{ok: 0, code: 13, codeName: "Unauthorized"}` and does not perform them (tests/support/mongo_faults.py).

Two routes are fail-closed (results, incidents), two fail-open (validation, telemetry). Wave A
is stored and committed before the refusal; wave B (good events only) is published while
MongoDB refuses; the refusal lasts until every fail-open record of wave B is committed, and at
least REFUSAL_S; wave C comes after healing. An operation-level refusal is an outage, not a
verdict on the records: fail-open, wave B is dead-lettered once as `persist_failed` and nothing
else is; fail-closed, nothing is dead-lettered for persistence, nothing is committed while
MongoDB refuses, and everything is stored after healing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import Published, Verdict, check_invariant, good_events, publish_all
from tests.chaos.support import (
    chaos_settings,
    committed_or_stalled,
    committed_total,
    good_count,
    mixed_stream,
    prepare_chaos_topics,
    wait_all_committed,
)
from tests.integration.harness import WorkerProcess
from tests.support.faultproxy import FaultProxy
from tests.support.mongo_faults import WriteRefusal, through_proxy, upstream_of
from tests.support.servers import ServerKinds
from worker.settings import RouteName, Settings

CLOSED = (RouteName.RESULTS, RouteName.INCIDENTS)
OPEN = (RouteName.VALIDATION, RouteName.TELEMETRY)
REFUSAL_S = 5.0


def topics(settings: Settings, routes: Sequence[RouteName]) -> list[str]:
    return [settings.topic_for(route) for route in routes]


def on(records: Sequence[Published], routes: Sequence[RouteName]) -> list[Published]:
    return [record for record in records if record.route in routes]


async def refuse_until_open_routes_pass(
    settings: Settings, refusal: WriteRefusal, *, open_target: int, closed_before: int, within: float
) -> list[int]:
    """Hold the refusal (already on) until the fail-open routes have committed `open_target`
    records, and at least REFUSAL_S; return every fail-closed committed total seen other than
    `closed_before`."""
    started, moved = time.monotonic(), []
    try:
        while True:
            closed_now = await committed_total(settings, topics(settings, CLOSED))
            if closed_now != closed_before:
                moved.append(closed_now)
            open_done = await committed_total(settings, topics(settings, OPEN)) >= open_target
            elapsed = time.monotonic() - started
            if open_done and elapsed >= REFUSAL_S:
                return moved
            assert elapsed < within, f"fail-open routes did not pass wave B within {within}s while refused"
            await asyncio.sleep(0.3)
    finally:
        refusal.refusing = False


async def test_mongodb_refuses_writes_as_unauthorized_then_heals(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds,
    chaos_result: Record,
) -> None:  # fmt: skip
    """Writes refused with code 13 mid-stream: fail-open records dead-lettered once as persist_failed, fail-closed records held (nothing committed, nothing dead-lettered) and stored after healing."""
    refusal = WriteRefusal()
    async with FaultProxy(upstream=upstream_of(mongo_uri)) as proxy:
        refusal.install(proxy)
        settings = chaos_settings(name=unique_name, bootstrap=kafka_bootstrap,
                                  mongo_uri=through_proxy(mongo_uri, proxy.address),
                                  kafka_max_batch_records=100,
                                  fail_closed_routes=",".join(route.value for route in CLOSED))  # fmt: skip
        await prepare_chaos_topics(create_topics, settings)
        size = scale.pick(400, 4000)
        wave_a = mixed_stream(f"{unique_name}-a", size, seed=101, malformed_share=0.03)
        wave_b = good_events(f"{unique_name}-b", size, seed=102)
        wave_c = mixed_stream(f"{unique_name}-c", size, seed=103, malformed_share=0.03)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        processes.append(worker)
        worker.start()
        await publish_all(settings, wave_a)
        await wait_all_committed(settings, len(wave_a), within=scale.pick(120, 600), stalled_after=30)
        refusal.refusing = True
        await publish_all(settings, wave_b)
        moved = await refuse_until_open_routes_pass(
            settings, refusal, open_target=len(on(wave_a + wave_b, OPEN)),
            closed_before=len(on(wave_a, CLOSED)), within=scale.pick(120, 600),
        )  # fmt: skip
        await publish_all(settings, wave_c)
        everything = wave_a + wave_b + wave_c
        stalled = await committed_or_stalled(settings, len(everything), within=scale.pick(180, 900),
                                             stalled_after=30)  # fmt: skip
        # The proxy runs in this event loop: wait for the worker's exit in a thread, or its last
        # MongoDB calls would hang until their socket timeout.
        assert await asyncio.to_thread(worker.terminate) == 0
    verdict = await check_invariant(settings, mongo_db, everything)
    chaos_result("MongoDB refuses writes (code 13), 2 routes fail-open, 2 fail-closed", verdict.counts,
                 servers=servers_label(server_kind, mongo="session, via a proxy refusing writes"))  # fmt: skip
    assert stalled is None, f"{stalled}; {verdict.explain()}"
    assert refusal.refused["insert"] > 0, "the worker must have met the refusal"
    assert verdict.holds, verdict.explain()
    missed = expectations_missed(verdict, wave_b, everything, moved)
    assert not missed, "\n".join(missed)


def expectations_missed(
    verdict: Verdict, wave_b: list[Published], everything: list[Published], moved: list[int]
) -> list[str]:
    """What went otherwise than an outage should (all of it, so one run shows every defect)."""
    missed = []
    if verdict.extra_dead_letters:
        missed.append(f"{verdict.extra_dead_letters} extra dead-letter copies: each refused record once")
    refused_open = on(wave_b, OPEN)
    kinds = Counter(verdict.error_type_of.get(p.chaos_id, "not dead-lettered") for p in refused_open)
    if set(kinds) != {"persist_failed"}:
        missed.append(f"fail-open records refused: dead-lettered as {dict(kinds)}, not all persist_failed")
    if stored := len({p.chaos_id for p in refused_open} & verdict.stored_ids):
        missed.append(f"{stored} fail-open records refused yet stored")
    closed = Counter(verdict.error_type_of.get(p.chaos_id, "-") for p in on(everything, CLOSED))
    if {"persist_failed", "persist_refused"} & set(closed):
        missed.append(f"fail-closed routes dead-lettered for persistence: {dict(closed)}")
    if moved:
        missed.append(f"fail-closed routes committed while MongoDB refused: totals {sorted(set(moved))[:5]}")
    if verdict.counts.stored != good_count(everything) - len(refused_open):
        missed.append(
            f"stored {verdict.counts.stored}, expected {good_count(everything) - len(refused_open)}"
        )
    return missed
