"""The MongoDB server stopped and restarted mid-stream, with every route fail-open, then with every
route fail-closed. Fail-open records go to the dead-letter topics after the retries (and a
`dlq replay --direct` stores them); fail-closed routes hold their partitions until MongoDB returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import Published, check_invariant, publish_all
from tests.chaos.support import (
    chaos_settings,
    good_count,
    log_events,
    mixed_stream,
    prepare_chaos_topics,
    wait_all_committed,
)
from tests.integration.harness import WorkerProcess, wait_until
from tests.support.servers import ServerKinds
from worker.commands.dlq import dlq_replay_command
from worker.dead_letters.replay import DlqReplayOptions
from worker.settings import RouteName, Settings

ALL_ROUTES = ",".join(route.value for route in RouteName)


async def publish_around_an_outage(
    settings: Settings, records: list[Published], mongo: Any, *, chunks: int, outage_s: float,
    felt: Callable[[], bool] = lambda: True,
) -> None:  # fmt: skip
    """Publish in chunks, 0.3 s apart; stop MongoDB after the first third, start it again
    `outage_s` later, after the second third, and not before the worker has `felt` the outage
    (at most 90 s more: on a loaded machine the retries can outlast a short outage)."""
    size = -(-len(records) // chunks)
    parts = [records[i : i + size] for i in range(0, len(records), size)]
    third = len(parts) // 3
    for index, part in enumerate(parts):
        if index == third:
            mongo.stop()
        if index == 2 * third:
            await asyncio.sleep(outage_s)
            for _ in range(900):
                if felt():
                    break
                await asyncio.sleep(0.1)
            mongo.start()
        await publish_all(settings, part)
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("policy", ["fail-open", "fail-closed"])
async def test_mongodb_stopped_and_restarted_mid_stream(
    policy: str, unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds,
    chaos_result: Record,
) -> None:  # fmt: skip
    """MongoDB goes away and comes back while events stream in: every event ends stored exactly once or dead-lettered (fail-open: as persist_failed; fail-closed: never)."""
    closed = {"fail_closed_routes": ALL_ROUTES} if policy == "fail-closed" else {}
    settings = chaos_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                              kafka_max_batch_records=100, **closed)  # fmt: skip
    await prepare_chaos_topics(create_topics, settings)
    records = mixed_stream(unique_name, scale.pick(1200, 15_000), seed=61, malformed_share=0.02)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    # The worker consumes only once MongoDB has answered: the outage must find it running.
    await wait_until(lambda: _started(worker), within=120, what="the worker started")
    def persist_failed_logged() -> bool:
        return policy == "fail-closed" or any(
            str(line.get("event", "")).endswith("_persist_failed") for line in log_events(worker)
        )

    await publish_around_an_outage(settings, records, controllable_mongo, chunks=scale.pick(12, 30),
                                   outage_s=scale.pick(4, 20), felt=persist_failed_logged)  # fmt: skip
    await wait_all_committed(settings, len(records), within=scale.pick(240, 900))
    assert worker.terminate() == 0
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(controllable_mongo.uri)
    db = client[settings.mongodb_database]
    try:
        verdict = await check_invariant(settings, db, records)
        servers = servers_label(server_kind, mongo="own, durable, stopped and restarted")
        chaos_result(f"MongoDB stopped/restarted, {policy}", verdict.counts, servers=servers)
        assert verdict.holds, verdict.explain()
        malformed = len(records) - good_count(records)
        if policy == "fail-closed":
            assert verdict.error_types["persist_failed"] == 0
            assert verdict.counts.stored == good_count(records)
            assert verdict.counts.dead_lettered == malformed
            return
        assert verdict.error_types["persist_failed"] > 0, "the outage must have dead-lettered records"
        replay = DlqReplayOptions(error_types=frozenset({"persist_failed"}), direct=True)
        assert await dlq_replay_command(settings, replay) == 0
        after = await check_invariant(settings, db, records)
        chaos_result("  … then `dlq replay --direct`", after.counts, servers=servers)
        assert after.holds, after.explain()
        assert after.counts.stored == good_count(records), "every good event stored once after the replay"
    finally:
        await client.close()


async def _started(worker: WorkerProcess) -> bool:
    return any(line.get("event") == "worker_started" for line in log_events(worker))
