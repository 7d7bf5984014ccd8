"""Two and three replicas in one consumer group; one is killed with SIGKILL mid-drain and the
others take its partitions over (rebalance). Nothing is lost, nothing is stored twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
from tests.integration.harness import WorkerProcess, wait_until
from tests.support.servers import ServerKinds


@pytest.mark.parametrize("replicas", [2, 3])
async def test_one_replica_killed_mid_batch_the_others_take_over(
    replicas: int, unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any,
    mongo_db: Any, tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds, chaos_result: Record,
) -> None:  # fmt: skip
    """With N replicas draining a backlog, one killed with SIGKILL after it has written batches: the survivors rebalance and every event ends stored exactly once or dead-lettered."""
    settings = chaos_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                              kafka_max_batch_records=scale.pick(50, 100))  # fmt: skip
    await prepare_chaos_topics(create_topics, settings)
    records = mixed_stream(unique_name, scale.pick(6000, 40_000), seed=53 + replicas, malformed_share=0.03)
    await publish_all(settings, records)
    workers = [WorkerProcess(settings, tmp_path / f"replica-{i}.log") for i in range(replicas)]
    processes.extend(workers)
    for worker in workers:
        worker.start()
    victim, survivors = workers[0], workers[1:]
    await wait_until(lambda: _all_assigned(workers), within=120, what="every replica to join the group")
    await wait_until(lambda: _has_written(victim), within=120, what="the victim to write its first batches")
    assigned_before = [count_events(s, "partitions_assigned") for s in survivors]
    victim.kill()
    killed_mid_drain = await stored_total(mongo_db) < good_count(records)
    # The group reassigns the dead member's partitions once its session times out (3 s here). Wait
    # for that before the survivors stop: on a fast machine the backlog can be all committed first.
    await wait_until(lambda: _reassigned(survivors, assigned_before), within=120,
                     what="the survivors to be assigned partitions again after the kill")  # fmt: skip
    await wait_all_committed(settings, len(records), within=scale.pick(240, 900))
    assert all(worker.terminate() == 0 for worker in survivors)
    verdict = await check_invariant(settings, mongo_db, records)
    chaos_result(f"{replicas} replicas, one SIGKILLed (rebalance)", verdict.counts,
                 servers=servers_label(server_kind))  # fmt: skip
    assert verdict.holds, verdict.explain()
    assert verdict.counts.stored == good_count(records)
    assert killed_mid_drain, "the kill must land while the backlog is still draining"


async def _reassigned(survivors: list[WorkerProcess], assigned_before: list[int]) -> bool:
    assigned_now = [count_events(s, "partitions_assigned") for s in survivors]
    return any(now > before for now, before in zip(assigned_now, assigned_before, strict=True))


async def _has_written(worker: WorkerProcess) -> bool:
    text = worker.log_text()
    return sum(text.count(f'"{name}"') for name in _SAVED) >= 2


_SAVED = ("validation_audit_saved", "workflow_result_saved", "incident_saved", "telemetry_buffered")


async def _all_assigned(workers: list[WorkerProcess]) -> bool:
    return all('"partitions_assigned"' in worker.log_text() for worker in workers)
