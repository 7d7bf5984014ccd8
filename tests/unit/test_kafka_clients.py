"""The Kafka clients are built from the settings: manual commits, and a bounded prefetch."""

from __future__ import annotations

from worker.kafka import create_consumer
from worker.settings import Settings


async def test_the_consumer_commits_by_hand_and_bounds_its_prefetch_by_the_settings() -> None:
    settings = Settings(
        kafka_max_batch_records=250, kafka_fetch_max_bytes=2 * 1024 * 1024, kafka_max_partition_fetch_bytes=65536
    )
    consumer = create_consumer(settings)
    # aiokafka keeps its options in private attributes; these are the ones it sends in fetch requests.
    assert consumer._enable_auto_commit is False
    assert consumer._fetch_max_bytes == 2 * 1024 * 1024
    assert consumer._max_partition_fetch_bytes == 65536
    assert consumer._max_poll_records == 250


def test_the_default_prefetch_is_far_below_aiokafkas_50_mib() -> None:
    settings = Settings()
    assert settings.kafka_fetch_max_bytes == 8 * 1024 * 1024
    assert settings.kafka_max_partition_fetch_bytes == 1024 * 1024
