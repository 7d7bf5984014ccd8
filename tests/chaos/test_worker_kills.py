"""The worker (a real process) killed with SIGKILL at random moments, again and again, while it
drains a backlog; a last replica finishes. Nothing is lost, nothing is stored twice."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import check_invariant, publish_all
from tests.chaos.support import (
    chaos_settings,
    count_events,
    good_count,
    mixed_stream,
    prepare_chaos_topics,
    stored_total,
    wait_all_committed,
)
from tests.integration.harness import WorkerProcess, settled, wait_until
from tests.support.servers import ServerKinds


async def test_sigkill_at_random_moments_while_draining(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds, chaos_result: Record,
) -> None:  # fmt: skip
    """Killed with SIGKILL at seeded random moments mid-drain and restarted each time, the worker ends with every event stored exactly once or dead-lettered."""
    settings = chaos_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                              kafka_max_batch_records=scale.pick(50, 100))  # fmt: skip
    await prepare_chaos_topics(create_topics, settings)
    records = mixed_stream(unique_name, scale.pick(4000, 30_000), seed=51, malformed_share=0.05)
    await publish_all(settings, records)
    kills, chooser = scale.pick(3, 10), random.Random(52)
    good = good_count(records)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    kills_mid_drain, stored = 0, await stored_total(mongo_db)
    for round_ in range(kills):
        # A random moment: after a random number of documents written since this restart.
        target = stored + chooser.randint(1, good // (kills + 2))
        worker.start()
        await wait_until(
            lambda t=target: _reached(mongo_db, t), within=180, what="progress after the restart"
        )
        worker.kill()
        # After SIGKILL the server may still finish writes it had received (mongod completes a
        # command whose client is gone), so a count read at once can still grow. Taken as the next
        # round's baseline, those late writes would count as the restarted worker's progress (the
        # kill could land before it wrote anything), and a kill after which the server stored the
        # last documents would count as mid-drain: both read the count only once it is stable.
        stored = await settled(lambda: stored_total(mongo_db))
        kills_mid_drain += stored < good
        assert count_events(worker, "worker_started") == round_ + 1
    worker.start()
    await wait_all_committed(settings, len(records), within=scale.pick(240, 900))
    await wait_until(lambda: _started(worker, kills + 1), within=60, what="the last worker's start-up line")
    assert worker.terminate() == 0
    verdict = await check_invariant(settings, mongo_db, records)
    chaos_result(f"worker SIGKILL x{kills} mid-drain", verdict.counts, servers=servers_label(server_kind))
    assert verdict.holds, verdict.explain()
    assert verdict.counts.stored == good
    assert kills_mid_drain == kills, "every kill must land while the backlog is still draining"


async def _reached(db: Any, target: int) -> bool:
    return await stored_total(db) >= target


async def _started(worker: WorkerProcess, times: int) -> bool:
    return count_events(worker, "worker_started") >= times
