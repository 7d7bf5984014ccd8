"""A light Kafka client whose only job is to ask the cluster for its metadata: is it reachable
(`KafkaProbe`, for `run`), which topics does it have (`cluster_topics`, for `check`)?

The consumer and producer retry on their own and say nothing we can read; this separate
client's metadata request answers "does the cluster answer now" through the same advertised
broker addresses they use. aiokafka errors end here, as TransientError (or KafkaUnavailable,
KafkaRefused with the operator's message).
"""

from __future__ import annotations

import asyncio

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from worker.errors import TransientError
from worker.kafka.clients import create_metadata_client
from worker.kafka.diagnose import KafkaRefused, KafkaUnavailable, kafka_failure
from worker.settings import Settings


async def cluster_topics(settings: Settings, *, timeout_s: float) -> dict[str, int]:
    """Every topic the cluster lists, with its partition count, within `timeout_s`.

    One metadata request for all topics: naming the wanted ones instead could make a broker
    with auto.create.topics.enable create them. KafkaUnavailable or KafkaRefused if no answer.
    """
    client = create_metadata_client(settings, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            cluster = await client.fetch_all_metadata()
    except (KafkaError, OSError, TimeoutError) as exc:
        failure = kafka_failure(exc, settings, timeout_s=timeout_s)
        raise (KafkaRefused if failure.refused else KafkaUnavailable)(failure) from exc
    finally:
        await client.close()
    return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}


class KafkaProbe:
    """`await probe()` returns when the cluster answered a metadata request; else TransientError."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        try:
            if self._client is None:
                await self._bootstrap()
            else:
                await self._client.fetch_all_metadata()
        except (KafkaError, OSError) as exc:
            # aiokafka's errors already start with their class name; OSError's do not.
            text = str(exc) if isinstance(exc, KafkaError) else f"{type(exc).__name__}: {exc}"
            raise TransientError(text) from exc

    async def _bootstrap(self) -> None:
        timeout_ms = max(int(self._settings.kafka_health_interval_s * 1000), 1000)
        client = create_metadata_client(self._settings, request_timeout_ms=timeout_ms)
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
