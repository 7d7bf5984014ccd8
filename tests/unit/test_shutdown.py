"""The end of `run` past SHUTDOWN_TIMEOUT_S: the group is still left and every client still closed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

import worker.app
from tests.support.kafka import FakeConsumer
from worker.settings import Settings

ENDS = ["member0.stop", "member1.stop", "member2.stop", "member3.stop",
        "producer.stop", "kafka_probe.close", "gateway.close"]  # fmt: skip
"""What `run_worker` ends, in order: the four group members (ROUTE_ISOLATION) leave, then the clients close."""


class Client:
    """One of the worker's clients (producer, Kafka probe, MongoDB gateway): records its end in `ended`."""

    connected = True

    def __init__(self, name: str, ended: list[str], *, stop_s: float = 0.0) -> None:
        self.name = name
        self.ended = ended
        self.stop_s = stop_s

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await asyncio.sleep(self.stop_s)
        self.ended.append(f"{self.name}.stop")

    async def close(self) -> None:
        self.ended.append(f"{self.name}.close")

    async def connect(self) -> None:  # the gateway's ping
        pass

    async def __call__(self) -> None:  # the Kafka probe's metadata request
        pass


class GroupMember(Client):
    """A FakeConsumer serving scripted batches (it sets `stop` once they are served: here at the first
    poll, as a SIGTERM would) with aiokafka's start and stop, the stop being the leave."""

    def __init__(self, name: str, ended: list[str], polls: FakeConsumer, *, stop_s: float) -> None:
        super().__init__(name, ended, stop_s=stop_s)
        self.polls = polls

    def __getattr__(self, name: str) -> Any:
        return getattr(self.polls, name)


@dataclass
class Adapters:
    """`run_worker`'s adapters replaced by fakes that record their ends in `ended`, in order."""

    leave_s: float = 0.0
    drain_s: float = 5.0
    """`run_worker`'s SHUTDOWN_TIMEOUT_S: how long its redelivery drain may wait (see `serve`)."""
    ended: list[str] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch, stop: asyncio.Event) -> None:
        def members(settings: Settings, served: list[Any]) -> list[GroupMember]:
            polls = [FakeConsumer(stop=stop, batches=[]) for _ in served]
            return [
                GroupMember(f"member{i}", self.ended, p, stop_s=self.leave_s) for i, p in enumerate(polls)
            ]

        monkeypatch.setattr(worker.app, "gateway_for", lambda settings: Client("gateway", self.ended))
        monkeypatch.setattr(worker.app, "KafkaProbe", lambda settings: Client("kafka_probe", self.ended))
        monkeypatch.setattr(worker.app, "create_producer", lambda settings: Client("producer", self.ended))
        monkeypatch.setattr(worker.app, "group_consumers", members)
        monkeypatch.setattr(worker.app, "wait_for_mongodb", mongodb_ready)
        monkeypatch.setattr(worker.app, "redeliver_until_stopped", redelivery_waiting_for_acks)
        monkeypatch.setattr(worker.app, "freeze_startup_objects", lambda: 0)  # no gc.freeze in the tests

    async def serve(self, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[str]:
        """`serve(settings)` of `run_worker` on the fakes; the events it logged."""

        async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
            self.install(monkeypatch, stop)
            # `serve` counts SHUTDOWN_TIMEOUT_S from the stop, the redelivery drain from the end of
            # the consumer loops (their batches in hand), so the drain's wait outlasts serve's. The
            # fake loops end at once: the drain is given the longer wait that batches in hand give it.
            await worker.app.run_worker(
                settings.model_copy(update={"shutdown_timeout_s": self.drain_s}), stop
            )

        with capture_logs() as logs, contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(worker.app.serve(settings, runner=run_worker), timeout=10)
        return [line["event"] for line in logs]


async def mongodb_ready(*_args: Any) -> bool:
    return True


async def redelivery_waiting_for_acks(*_args: Any) -> None:
    """A redelivery batch whose acks take longer than the shutdown timeout (up to 3/4 of its lease)."""
    await asyncio.Event().wait()


def quick_shutdown(**overrides: Any) -> Settings:
    """SHUTDOWN_TIMEOUT_S of 0.2 s, no HTTP, no index check (the fake gateway has no indexes)."""
    return Settings(
        shutdown_timeout_s=0.2, http_port=0, index_check_interval_s=0, route_isolation=True, **overrides
    )


async def test_a_shutdown_timeout_during_the_redelivery_drain_still_leaves_the_group_and_closes_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When `serve` cancels `run_worker` after SHUTDOWN_TIMEOUT_S while it waits for a redelivery
    batch, every group member still leaves the group and every client is still closed, in order."""
    adapters = Adapters()
    events = await adapters.serve(monkeypatch, quick_shutdown(redelivery_enabled=True))
    assert "shutdown_timeout" in events
    assert adapters.ended == ENDS
    assert events[-1] == "worker_stopped"


async def test_a_shutdown_timeout_during_the_leave_lets_it_finish_and_still_closes_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel by the shutdown timeout while the members leave the group waits for the leave (it
    is bounded by KAFKA_SESSION_TIMEOUT_MS), then the clients are closed all the same."""
    adapters = Adapters(leave_s=0.4)
    events = await adapters.serve(monkeypatch, quick_shutdown(redelivery_enabled=False))
    assert "shutdown_timeout" in events
    assert adapters.ended == ENDS
