"""The probe endpoints and the metrics they expose."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from tests.support.telemetry import FakeBuffer, FakePublisher, due_documents, loop_from, record_pauses
from worker.errors import TransientError
from worker.ops.health import Health, Liveness
from worker.ops.http import respond, serve_http
from worker.retry import RetryPolicy, with_retries
from worker.settings import Settings
from worker.telemetry.buffer import Settled


def health(*, polled_ago: float = 0.0, mongodb: bool = True, assigned: bool = True) -> Health:
    import time

    return Health(last_poll=lambda: time.monotonic() - polled_ago, mongodb_ready=lambda: mongodb,
                  has_assignment=lambda: assigned, stuck_after_s=60)  # fmt: skip


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_healthz_fails_when_the_consumer_loop_has_not_polled_for_too_long() -> None:
    """/healthz is 200 after a recent poll and 503 once the loop looks stuck."""
    assert status_of(respond("/healthz", health(polled_ago=1))) == 200
    assert status_of(respond("/healthz", health(polled_ago=600))) == 503


def test_readyz_needs_both_mongodb_and_an_assignment() -> None:
    """/readyz is 200 only when MongoDB answered and partitions are assigned."""
    assert status_of(respond("/readyz", health())) == 200
    assert status_of(respond("/readyz", health(mongodb=False))) == 503
    assert status_of(respond("/readyz", health(assigned=False))) == 503


def test_unknown_paths_are_not_found() -> None:
    """Anything but the three endpoints answers 404."""
    assert status_of(respond("/admin", health())) == 404


async def test_each_retry_is_counted_in_the_metrics() -> None:
    """`persistence_write_retries_total` rises by one per retried attempt."""
    settings = Settings(retry_max_attempts=3, retry_initial_interval_ms=0, retry_backoff_coefficient=0.0001)
    before = (
        REGISTRY.get_sample_value("persistence_write_retries_total", {"collection": "metrics_test"}) or 0.0
    )
    calls = 0

    async def flaky(_: None) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("down")
        return "ok"

    assert await with_retries(RetryPolicy.from_settings(settings), "metrics_test", flaky, None) == "ok"
    after = REGISTRY.get_sample_value("persistence_write_retries_total", {"collection": "metrics_test"})
    assert after == before + 2


async def test_metrics_endpoint_serves_prometheus_text_over_http() -> None:
    """GET /metrics over a real socket answers Prometheus text with the worker's counters."""
    from tests.support.standins import free_port

    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_http(port, health(), stop))
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = await reader.read()
    writer.close()
    stop.set()
    await server
    assert body.startswith(b"HTTP/1.1 200 OK")
    assert b"# TYPE persistence_records_consumed_total counter" in body


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_names_the_redelivery_loop_when_it_is_stuck() -> None:
    """/healthz covers every loop: a redelivery loop that has not beaten for too long fails the probe."""
    clock = Clock()
    redelivery = Liveness(clock)
    probe = Health(last_poll=time.monotonic, mongodb_ready=lambda: True, has_assignment=lambda: True,
                   stuck_after_s=60, loops={"redelivery": redelivery})  # fmt: skip
    redelivery.beat(5)
    clock.now += 64
    assert status_of(respond("/healthz", probe)) == 200
    clock.now += 2  # 66 s after a beat that promised the next within 5 s
    response = respond("/healthz", probe)
    assert status_of(response) == 503
    assert response.endswith(b"redelivery loop stuck\n")


def test_a_planned_long_backoff_is_not_mistaken_for_a_hang() -> None:
    """A loop that said it waits 300 s is alive for 300 s plus the stuck threshold."""
    clock = Clock()
    redelivery = Liveness(clock)
    probe = Health(last_poll=None, mongodb_ready=lambda: True, has_assignment=lambda: True, stuck_after_s=60,
                   loops={"redelivery": redelivery})  # fmt: skip
    redelivery.beat(300)
    clock.now += 359
    assert probe.alive()
    clock.now += 2
    assert probe.stuck_loops() == ["redelivery"]


def test_both_stuck_loops_are_named() -> None:
    """With the consumer loop and the redelivery loop both stuck, the probe names both."""
    clock = Clock()
    redelivery = Liveness(clock)
    clock.now += 500
    probe = Health(last_poll=lambda: time.monotonic() - 600, mongodb_ready=lambda: True,
                   has_assignment=lambda: True, stuck_after_s=60, loops={"redelivery": redelivery})  # fmt: skip
    assert respond("/healthz", probe).endswith(b"consumer loop stuck\nredelivery loop stuck\n")


def outcome_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("persistence_telemetry_redelivery_total", {"outcome": outcome}) or 0.0


async def test_redelivery_outcomes_are_counted_per_document() -> None:
    """persistence_telemetry_redelivery_total{outcome} rises by the documents of each outcome of a batch."""
    parked = [{"_id": "tel-p", "retry_count": 10}]
    buffer = FakeBuffer(due_documents(6), settles_as=Settled(removed=2, rescheduled=1, parked=parked, unknown=1, lost=1))
    loop = loop_from(Settings(), buffer=buffer, publisher=FakePublisher(), stop=asyncio.Event())
    before = {o: outcome_count(o) for o in ("delivered", "rescheduled", "parked", "unanswered", "lost")}
    await loop.deliver_batch(6)
    after = {o: outcome_count(o) - before[o] for o in before}
    assert after == {"delivered": 2, "rescheduled": 1, "parked": 1, "unanswered": 1, "lost": 1}


class RecordingLiveness(Liveness):
    def __init__(self) -> None:
        super().__init__()
        self.beats: list[float] = []

    def beat(self, expect_next_within_s: float = 0.0) -> None:
        self.beats.append(expect_next_within_s)
        super().beat(expect_next_within_s)


async def test_the_redelivery_loop_beats_before_each_batch_and_each_wait() -> None:
    """The loop promises its next beat within the lease (a batch) or the wait it is about to take."""
    settings = Settings(redelivery_idle_poll_s=7, redelivery_batch_size=3)
    stop = asyncio.Event()
    liveness = RecordingLiveness()
    buffer = FakeBuffer(due_documents(3), when_empty=stop.set, lease_s=30)  # the stop comes with the empty batch: one idle wait
    loop = loop_from(settings, buffer=buffer, publisher=FakePublisher(), stop=stop, liveness=liveness)
    await asyncio.wait_for(loop.run(), timeout=5)
    # a batch of 3 documents, an empty one, then the idle wait
    assert liveness.beats == [30, 30, 7]


def failure_count(stage: str) -> float:
    return (
        REGISTRY.get_sample_value("persistence_telemetry_redelivery_failures_total", {"stage": stage}) or 0.0
    )


async def test_each_failed_redelivery_batch_is_counted_by_stage() -> None:
    """A batch that fails as a whole (broker down) counts once in persistence_telemetry_redelivery_failures_total{stage}."""
    settings = Settings(redelivery_batch_size=3, redelivery_backoff_base_s=1, redelivery_backoff_cap_s=1)
    stop = asyncio.Event()
    buffer = FakeBuffer(due_documents(10), settles_as=Settled(rescheduled=3))
    loop = loop_from(settings, buffer=buffer, publisher=FakePublisher(down=True), stop=stop)
    record_pauses(loop, stop, until=2)
    before = failure_count("kafka")
    await loop.run()
    assert failure_count("kafka") == before + 2
