"""The Kafka clients are built from the settings: manual commits, and a bounded prefetch."""

from __future__ import annotations

import pytest

from worker.kafka.clients import ProducerPurpose, create_consumer, create_producer
from worker.settings import Settings


async def test_the_consumer_commits_by_hand_and_bounds_its_prefetch_by_the_settings() -> None:
    settings = Settings(
        kafka_max_batch_records=250,
        kafka_fetch_max_bytes=2 * 1024 * 1024,
        kafka_max_partition_fetch_bytes=65536,
    )
    consumer = create_consumer(settings)
    # aiokafka keeps its options in private attributes; these are the ones it sends in fetch requests.
    assert consumer._enable_auto_commit is False
    assert consumer._fetch_max_bytes == 2 * 1024 * 1024
    assert consumer._max_partition_fetch_bytes == 65536
    assert consumer._max_poll_records == 250


async def test_a_replicas_members_share_its_fetch_budget_so_that_more_routes_do_not_mean_more_memory() -> None:
    settings = Settings(kafka_fetch_max_bytes=8 * 1024 * 1024, kafka_max_partition_fetch_bytes=65536)
    consumers = [create_consumer(settings, member=route, members=4) for route in ("a", "b", "c", "d")]
    assert sum(consumer._fetch_max_bytes for consumer in consumers) == 8 * 1024 * 1024
    assert {consumer._max_partition_fetch_bytes for consumer in consumers} == {65536}


async def test_the_fetch_wait_comes_from_the_settings() -> None:
    """KAFKA_FETCH_MAX_WAIT_MS is how long the broker may hold an empty fetch request."""
    consumer = create_consumer(Settings(kafka_fetch_max_wait_ms=40))
    assert consumer._fetch_max_wait_ms == 40


def test_the_default_fetch_wait_is_well_below_aiokafkas_500_ms() -> None:
    """A fetch held for 500 ms by the broker delays records published meanwhile (p99 latency)."""
    assert Settings().kafka_fetch_max_wait_ms == 100


def test_the_default_prefetch_is_far_below_aiokafkas_50_mib() -> None:
    settings = Settings()
    assert settings.kafka_fetch_max_bytes == 8 * 1024 * 1024
    assert settings.kafka_max_partition_fetch_bytes == 1024 * 1024


async def test_the_consumer_reads_committed_records_by_default() -> None:
    """Without KAFKA_ISOLATION_LEVEL the consumer asks for read_committed (aborted transactions skipped)."""
    assert create_consumer(Settings())._isolation_level == "read_committed"


async def test_the_isolation_level_setting_reaches_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """KAFKA_ISOLATION_LEVEL=read_uncommitted from the environment is what the consumer is built with."""
    monkeypatch.setenv("KAFKA_ISOLATION_LEVEL", "read_uncommitted")
    assert create_consumer(Settings())._isolation_level == "read_uncommitted"


async def test_another_group_keeps_the_same_fetch_bounds() -> None:
    """A consumer for another group (dlq replay's) has the worker's prefetch bounds and isolation."""
    settings = Settings(kafka_fetch_max_bytes=2 * 1024 * 1024, kafka_max_partition_fetch_bytes=65536)
    consumer = create_consumer(settings, group_id="other", auto_offset_reset="earliest")
    assert consumer._group_id == "other"
    assert (consumer._fetch_max_bytes, consumer._max_partition_fetch_bytes) == (2 * 1024 * 1024, 65536)
    assert consumer._isolation_level == "read_committed"


async def test_every_producer_waits_for_all_replicas() -> None:
    """Every purpose's producer is built with acks=all (aiokafka stores it as -1)."""
    for purpose in ProducerPurpose:
        assert create_producer(Settings(), purpose=purpose)._sender._acks == -1


async def test_the_dead_letter_producer_is_bounded_by_the_max_request_size() -> None:
    """Dead letters and republished records share KAFKA_MAX_REQUEST_BYTES as max_request_size."""
    settings = Settings(kafka_max_request_bytes=2 * 1024 * 1024)
    for purpose in (ProducerPurpose.DEAD_LETTERS, ProducerPurpose.REPUBLISH):
        assert create_producer(settings, purpose=purpose)._max_request_size == 2 * 1024 * 1024


async def test_the_telemetry_producer_resolves_within_a_quarter_of_the_lease() -> None:
    """The telemetry producer has no idempotence and a request timeout of a quarter of the redelivery lease."""
    producer = create_producer(Settings(redelivery_lease_s=60), purpose=ProducerPurpose.TELEMETRY)
    assert producer._request_timeout_ms == 15_000
    assert producer._txn_manager is None  # aiokafka builds a transaction manager only for idempotence


async def test_a_route_member_names_its_route_in_its_client_id() -> None:
    """With route isolation each member's client id is KAFKA_CLIENT_ID-<route>, so the group's
    description tells a replica's four members apart; other consumers keep KAFKA_CLIENT_ID."""
    settings = Settings(kafka_client_id="pw")
    assert create_consumer(settings, member="incidents")._client._client_id == "pw-incidents"
    assert create_consumer(settings)._client._client_id == "pw"
