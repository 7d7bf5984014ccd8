"""Server reachability: one log line per transition, the gauge, the readiness reasons, the probes."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from worker.errors import TransientError
from worker.ops.health import Health
from worker.ops.http import respond
from worker.ops.reachability import Reachability, ServerReachability, probe_once, server_address


def up_gauge(server: str) -> float | None:
    return REGISTRY.get_sample_value("persistence_server_up", {"server": server})


def test_server_address_keeps_hosts_and_drops_credentials_path_and_options() -> None:
    """Only host:port pairs remain of a connection string; a plain host list stays as it is."""
    assert server_address("mongodb://u:p@h1:27017,h2:27018/db?replicaSet=rs") == "h1:27017,h2:27018"
    assert server_address("mongodb+srv://admin:secret@cluster.example.com/?tls=true") == "cluster.example.com"
    assert server_address("kafka-1:9092,kafka-2:9092") == "kafka-1:9092,kafka-2:9092"


def test_each_transition_is_logged_once_with_address_and_since() -> None:
    """Repeated failures log `kafka_unavailable` once; the next answer logs `kafka_available` with the outage's start."""
    kafka = ServerReachability("kafka", "k:9092")
    with capture_logs() as logs:
        kafka.answered()
        kafka.failed("refused")
        kafka.failed("refused again")
        kafka.failed("refused once more")
        kafka.answered()
        kafka.answered()
    names = [line["event"] for line in logs]
    assert names == ["kafka_unavailable", "kafka_available"]
    down, up = logs
    assert down["address"] == "k:9092" and down["error"] == "refused"
    assert up["unavailable_since"] == down["since"]


def test_gauge_follows_the_server_state() -> None:
    """`persistence_server_up{server}` is 0 while the server does not answer and 1 once it does."""
    server = ServerReachability("gauge_test", "g:1")
    server.failed("down")
    assert up_gauge("gauge_test") == 0
    server.answered()
    assert up_gauge("gauge_test") == 1


def test_unreachable_servers_are_readiness_reasons_until_they_answer() -> None:
    """A server that failed is a reason (server, address, since, latest error) until it answers again."""
    mongodb, kafka = ServerReachability("mongodb", "m:27017"), ServerReachability("kafka", "k:9092")
    servers = Reachability(mongodb, kafka)
    assert servers.unreachable() == []
    kafka.failed("first")
    kafka.failed("latest")
    [reason] = servers.unreachable()
    assert (reason["server"], reason["address"], reason["error"]) == ("kafka", "k:9092", "latest")
    assert reason["since"]
    kafka.answered()
    assert servers.unreachable() == []


def test_readyz_answers_503_with_the_reasons_as_json() -> None:
    """While a server is unreachable /readyz is 503 with a JSON body naming it and since when."""
    reason = {"server": "kafka", "address": "k:9092", "since": "2026-01-01T00:00:00+00:00", "error": "x"}
    health = Health(last_poll=None, mongodb_ready=lambda: True, has_assignment=lambda: True,
                    unreachable=lambda: [dict(reason)])  # fmt: skip
    response = respond("/readyz", health)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head
    assert orjson.loads(body) == {"ready": False, "reasons": [reason]}
    healthy = Health(last_poll=None, mongodb_ready=lambda: True, has_assignment=lambda: True)
    assert respond("/readyz", healthy).startswith(b"HTTP/1.1 200")


async def test_a_probe_that_hangs_counts_as_unreachable() -> None:
    """A probe still waiting after its timeout marks the server unreachable; a later answer clears it."""
    server = ServerReachability("hang_test", "h:1")

    async def hang() -> None:
        await asyncio.sleep(60)

    async def fail() -> None:
        raise TransientError("refused")

    async def answer() -> None:
        return None

    assert not await probe_once(server, hang, timeout_s=0.05)
    assert server.reason() is not None and "no answer within" in server.reason()["error"]  # type: ignore[index]
    assert not await probe_once(server, fail, timeout_s=1)
    assert await probe_once(server, answer, timeout_s=1)
    assert server.up is True
