"""The broker stopped and restarted under a running worker.

The stand-in broker (tansu, memory storage) forgets everything when it restarts: topics,
records and committed offsets. So the scenario is built around that: wave 1 is published
and fully stored or dead-lettered and committed before the stop, and its dead letters are
read then (the restarted broker will not have them); the broker stays down for a while
under the running worker, which must neither crash nor need a restart; after the restart
the topics are created again and wave 2 is published. The invariant covers both waves.
A real broker would also keep wave 1's records and the group's offsets across the restart:
the worker would then resume from its committed offsets instead of from the start of the
(new, empty) topics. Wave 2 is published only once the worker has rejoined the group on the
restarted broker: until then its fetch positions are those of the old topics, and records
below them would be skipped (seen on tansu: it also accepted that member's offset commits).
The redelivery loop runs in the worker: wave 1's telemetry is delivered, and the delivery topic
read, before the stop, for the same reason as its dead letters.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import PENDING, check_invariant, publish_all, read_dead_letters
from tests.chaos.support import chaos_settings, count_events, good_count, mixed_stream, wait_all_committed
from tests.integration.harness import WorkerProcess, ensure_topics, input_topics, wait_until
from tests.integration.telemetry_support import read_delivered
from tests.support.servers import ServerKinds
from worker.settings import Settings


async def create_topics_on_broker(settings: Settings) -> None:
    topics = input_topics(settings)
    await ensure_topics(settings.kafka_bootstrap_servers, topics, partitions=3)
    await ensure_topics(
        settings.kafka_bootstrap_servers, [settings.kafka_telemetry_delivery_topic], partitions=3
    )
    await ensure_topics(
        settings.kafka_bootstrap_servers, [settings.dlq_topic(t) for t in topics], partitions=1
    )


async def test_broker_stopped_and_restarted_under_a_running_worker(
    unique_name: str, controllable_kafka: Any, mongo_uri: str, mongo_db: Any, tmp_path: Path,
    processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds, chaos_result: Record,
) -> None:  # fmt: skip
    """The worker rides out a broker outage without crashing; wave 1 (committed before) and wave 2 (published after the restart) end stored exactly once or dead-lettered."""
    settings = chaos_settings(name=unique_name, bootstrap=controllable_kafka.bootstrap, mongo_uri=mongo_uri,
                              kafka_max_batch_records=100)  # fmt: skip
    await create_topics_on_broker(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    processes.append(worker)
    worker.start()
    wave_1 = mixed_stream(f"{unique_name}-w1", scale.pick(1000, 10_000), seed=71, malformed_share=0.03)
    await publish_all(settings, wave_1)
    await wait_all_committed(settings, len(wave_1), within=scale.pick(180, 600))
    # Wave 1's telemetry is delivered before the stop: the restarted broker forgets the delivery topic.
    await wait_until(lambda: _buffer_empty(mongo_db), within=120, what="wave 1's telemetry delivered")
    dead_before_restart = await read_dead_letters(settings)
    delivered_before_restart = await read_delivered(
        settings.kafka_bootstrap_servers, settings.kafka_telemetry_delivery_topic, idle_ms=2000
    )
    joined_before = count_events(worker, "partitions_assigned")
    controllable_kafka.stop()
    await asyncio.sleep(scale.pick(5, 30))
    assert worker.process is not None and worker.process.poll() is None, "the worker survives the outage"
    controllable_kafka.start()
    await create_topics_on_broker(settings)
    # The new broker knows neither the group nor its offsets; until the worker has rejoined, its
    # fetch positions are those of the old topics, which would skip wave 2's first records.
    await wait_until(
        lambda: _joined_again(worker, joined_before), within=120, what="the worker to rejoin the group"
    )
    wave_2 = mixed_stream(f"{unique_name}-w2", scale.pick(1000, 10_000), seed=72, malformed_share=0.03)
    await publish_all(settings, wave_2)
    await wait_all_committed(settings, len(wave_2), within=scale.pick(240, 900))
    assert worker.terminate() == 0
    both = wave_1 + wave_2
    verdict = await check_invariant(settings, mongo_db, both, earlier_dead=dead_before_restart,
                                    earlier_delivered=delivered_before_restart)  # fmt: skip
    servers = servers_label(server_kind, kafka="own, stopped and restarted, memory storage")
    chaos_result("broker stopped/restarted (two waves)", verdict.counts, servers=servers)
    assert verdict.holds, verdict.explain()
    assert verdict.counts.stored == good_count(both)
    assert count_events(worker, "worker_started") == 1, "one process throughout: no restart"


async def _joined_again(worker: WorkerProcess, before: int) -> bool:
    return count_events(worker, "partitions_assigned") > before


async def _buffer_empty(db: Any) -> bool:
    return await db.telemetry_buffer.count_documents(PENDING) == 0
