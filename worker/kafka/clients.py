"""The one factory for every Kafka client, built straight from the settings (security included).

Every client gets `connection_options`: KAFKA_BOOTSTRAP_SERVERS, KAFKA_CLIENT_ID, and the
KAFKA_SECURITY_PROTOCOL's SSL context and SASL credentials. Beyond those:

    create_consumer                 the worker's group member and `dlq replay`'s: manual commits
                                    (enable_auto_commit=False), KAFKA_ISOLATION_LEVEL, the session,
                                    heartbeat and poll intervals, the fetch wait
                                    (KAFKA_FETCH_MAX_WAIT_MS), and a bounded prefetch
                                    (KAFKA_MAX_BATCH_RECORDS, KAFKA_FETCH_MAX_BYTES, ..._PARTITION_...)
    create_producer(purpose=...)    acks=all always, then per ProducerPurpose:
        DEAD_LETTERS, REPUBLISH       linger 5 ms, max_request_size=KAFKA_MAX_REQUEST_BYTES (the
                                      dead-letter publisher truncates what would not fit)
        TELEMETRY                     linger 5 ms, no idempotence (the stand-in broker refuses it),
                                      request_timeout_ms a quarter of REDELIVERY_LEASE_S, so every
                                      send's outcome is known before its claim can lapse
        DEMO                          linger 10 ms (tests/demo)
    create_admin                    topics (the demo creates them)
    create_metadata_client          the probes' bare client (metadata requests only: `run`, `check`)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context

from worker.settings import Settings


class ProducerPurpose(StrEnum):
    """What a producer sends; its options follow (see the module docstring)."""

    DEAD_LETTERS = "dead_letters"
    REPUBLISH = "republish"
    """`dlq replay` sending dead letters back to their source topic."""
    TELEMETRY = "telemetry"
    DEMO = "demo"


def connection_options(settings: Settings) -> dict[str, Any]:
    """Options common to every client: servers, client id, SSL and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def create_consumer(
    settings: Settings,
    *,
    group_id: str | None = None,
    auto_offset_reset: Literal["earliest", "latest"] | None = None,
    member: str | None = None,
    members: int = 1,
) -> AIOKafkaConsumer:
    """A group consumer with manual commits: offsets move only after records are safe.

    Every consumer (the worker's, `dlq replay`'s) has the same bounded prefetch and fetch wait,
    and reads with KAFKA_ISOLATION_LEVEL; `group_id` and `auto_offset_reset` default to the settings'.
    The broker may hold a fetch that finds no new records for KAFKA_FETCH_MAX_WAIT_MS, and aiokafka
    sends no other fetch to that broker meanwhile: that wait bounds the publish → poll latency.
    `member` (a route's name) is appended to KAFKA_CLIENT_ID, so that the group's description
    tells a replica's members apart; KAFKA_FETCH_MAX_BYTES is the replica's, shared equally by
    its `members`, so that the prefetch bound does not grow with the number of routes.
    """
    options = connection_options(settings)
    if member is not None:
        options["client_id"] = f"{settings.kafka_client_id}-{member}"
    return AIOKafkaConsumer(
        **options,
        group_id=group_id or settings.kafka_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset or settings.kafka_auto_offset_reset,
        isolation_level=settings.kafka_isolation_level,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        max_poll_records=settings.kafka_max_batch_records,
        fetch_max_bytes=max(settings.kafka_fetch_max_bytes // members, 1024),
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )


def create_producer(
    settings: Settings, *, purpose: ProducerPurpose = ProducerPurpose.DEAD_LETTERS
) -> AIOKafkaProducer:
    """A producer whose sends count only once all in-sync replicas have them (acks=all)."""
    return AIOKafkaProducer(
        **connection_options(settings), acks="all", **_producer_options(settings, purpose)
    )


def _producer_options(settings: Settings, purpose: ProducerPurpose) -> dict[str, Any]:
    if purpose is ProducerPurpose.TELEMETRY:
        # Without idempotence aiokafka retries a batch until it is request_timeout_ms old.
        lease_quarter_ms = int(settings.redelivery_lease_s * 1000 / 4)
        return {"linger_ms": 5, "enable_idempotence": False, "request_timeout_ms": lease_quarter_ms}
    if purpose is ProducerPurpose.DEMO:
        return {"linger_ms": 10}
    return {"linger_ms": 5, "max_request_size": settings.kafka_max_request_bytes}


def create_admin(settings: Settings, *, request_timeout_ms: int | None = None) -> AIOKafkaAdminClient:
    """An admin client (aiokafka's default request timeout unless given)."""
    timeout = {} if request_timeout_ms is None else {"request_timeout_ms": request_timeout_ms}
    return AIOKafkaAdminClient(**connection_options(settings), **timeout)


def create_metadata_client(settings: Settings, *, request_timeout_ms: int) -> AIOKafkaClient:
    """A bare client for metadata requests: does the cluster answer, through the advertised brokers?"""
    return AIOKafkaClient(**connection_options(settings), request_timeout_ms=request_timeout_ms)
