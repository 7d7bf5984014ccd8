"""Building aiokafka clients straight from the settings (security included)."""

from __future__ import annotations

from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from worker.settings import Settings


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
) -> AIOKafkaConsumer:
    """A group consumer with manual commits: offsets move only after records are safe.

    Every consumer (the worker's, `dlq replay`'s) has the same bounded prefetch and reads
    with KAFKA_ISOLATION_LEVEL; `group_id` and `auto_offset_reset` default to the settings'.
    """
    return AIOKafkaConsumer(
        **connection_options(settings),
        group_id=group_id or settings.kafka_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset or settings.kafka_auto_offset_reset,
        isolation_level=settings.kafka_isolation_level,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        max_poll_records=settings.kafka_max_batch_records,
        fetch_max_bytes=settings.kafka_fetch_max_bytes,
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
    )


def create_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer whose sends count only once all in-sync replicas have them."""
    return AIOKafkaProducer(
        **connection_options(settings),
        acks="all",
        linger_ms=5,
        max_request_size=settings.kafka_max_request_bytes,
    )
