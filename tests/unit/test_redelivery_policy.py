"""Redelivery policy without servers: backoff, settings, the telemetry message, send outcomes, the loop's backoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError, NodeNotReadyError
from bson.tz_util import FixedOffset
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.support.kafka import FakeProducer
from tests.support.telemetry import FakeBuffer, FakePublisher, loop_from, record_pauses
from worker.errors import TransientError
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.telemetry.delivery import MalformedDocument, TelemetryPublisher, telemetry_message

MOMENT = datetime(2026, 11, 25, 10, 0, 1, 250000, tzinfo=UTC)


def buffered(**changes: Any) -> dict[str, Any]:
    document = {
        "_id": "tel-1",
        "correlation": {"workflow_id": "wf-1", "plan_id": "plan-1"},
        "metrics": {"cpu.usage": 0.5},
        "timestamp": MOMENT,
        "source": "executor",
        "buffered_at": MOMENT,
        "retry_count": 3,
    }
    return {**document, **changes}


def test_defaults_match_the_documented_table() -> None:
    """The redelivery settings default to the values docs/configuration.md documents."""
    settings = Settings()
    assert settings.redelivery_enabled is True
    assert settings.kafka_telemetry_delivery_topic == "observability.telemetry"
    assert settings.telemetry_max_delivery_attempts == 10
    assert (settings.redelivery_lease_s, settings.redelivery_batch_size, settings.redelivery_idle_poll_s) == (
        60,
        100,
        5,
    )
    assert (
        settings.redelivery_backoff_base_s,
        settings.redelivery_backoff_factor,
        settings.redelivery_backoff_cap_s,
    ) == (1, 2, 300)


@pytest.mark.parametrize(
    ("field", "value"),
    [("telemetry_max_delivery_attempts", 0), ("redelivery_lease_s", 0.5), ("redelivery_backoff_factor", 0.5),
     ("redelivery_batch_size", 0), ("redelivery_idle_poll_s", 0), ("redelivery_backoff_base_s", 0)],
)  # fmt: skip
def test_out_of_range_redelivery_settings_are_refused(field: str, value: float) -> None:
    """Each redelivery setting refuses a value outside its range."""
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_a_cap_below_the_base_is_refused() -> None:
    """REDELIVERY_BACKOFF_CAP_S below REDELIVERY_BACKOFF_BASE_S is a configuration error naming both."""
    with pytest.raises(
        ValidationError, match=r"REDELIVERY_BACKOFF_CAP_S.* is below REDELIVERY_BACKOFF_BASE_S"
    ):
        Settings(redelivery_backoff_base_s=10, redelivery_backoff_cap_s=5)


def test_backoff_grows_by_the_factor_up_to_the_cap() -> None:
    """The wait after attempt n is base * factor**(n-1), capped, and never overflows."""
    settings = Settings(
        redelivery_backoff_base_s=0.5, redelivery_backoff_factor=3, redelivery_backoff_cap_s=10
    )
    backoff = RetryPolicy.for_redelivery(settings)
    assert [backoff.backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10]
    assert backoff.backoff_s(10_000) == 10
    assert backoff.backoff_s(0) == 0.5


def test_the_message_is_the_telemetry_event_keyed_by_workflow() -> None:
    """Key = workflow id; value = correlation, metrics, UTC timestamp with Z, source; headers retry_count and buffer_id."""
    message = telemetry_message(buffered())
    assert message.key == b"wf-1"
    assert orjson.loads(message.value) == {
        "correlation": {"workflow_id": "wf-1", "plan_id": "plan-1"},
        "metrics": {"cpu.usage": 0.5},
        "timestamp": "2026-11-25T10:00:01.250000Z",
        "source": "executor",
    }
    assert message.headers == [("retry_count", b"3"), ("buffer_id", b"tel-1")]


@pytest.mark.parametrize(
    "stamp",
    [MOMENT.astimezone(timezone(timedelta(hours=2))), MOMENT.replace(tzinfo=None),
     MOMENT.astimezone(FixedOffset(0, "UTC"))],
)  # fmt: skip
def test_timestamps_of_any_zone_are_sent_in_utc(stamp: datetime) -> None:
    """A zoned, a naive (UTC by convention) or a driver FixedOffset timestamp is sent as the same UTC instant."""
    assert (
        orjson.loads(telemetry_message(buffered(timestamp=stamp)).value)["timestamp"]
        == "2026-11-25T10:00:01.250000Z"
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"correlation": {}},
        {"metrics": None, "correlation": None},
        {"timestamp": 5},
        {"metrics": {1: 2}},
    ],
)
def test_a_document_that_cannot_become_a_message_is_malformed(broken: dict[str, Any]) -> None:
    """Missing or mistyped fields raise MalformedDocument (parked at once), not a crash of the loop."""
    with pytest.raises(MalformedDocument):
        telemetry_message(buffered(**broken))


async def test_send_outcomes_are_classified() -> None:
    """An acknowledgement delivers; too large is permanent; an unreachable broker is not; no answer in time is unknown."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(4)]
    futures[0].set_result(object())
    futures[1].set_exception(MessageSizeTooLargeError())
    futures[2].set_exception(NodeNotReadyError())
    publisher = TelemetryPublisher(producer=FakeProducer(), topic="out")  # type: ignore[arg-type]
    outcomes = await publisher.outcomes([(buffered(), future) for future in futures], within_s=0)
    assert outcomes[0].delivered
    assert outcomes[1].permanent and not outcomes[1].delivered
    assert not outcomes[2].permanent and not outcomes[2].unknown and outcomes[2].error
    assert outcomes[3].unknown and futures[3].cancelled()


async def test_while_kafka_is_down_the_loop_backs_off_and_probes_one_document_at_a_time() -> None:
    """After a batch fails as a whole the loop waits base*factor**(n-1) (capped) and claims one document per try."""
    settings = Settings(redelivery_batch_size=50, redelivery_backoff_base_s=1, redelivery_backoff_cap_s=4)
    stop = asyncio.Event()
    buffer = FakeBuffer(endless=True)
    loop = loop_from(settings, buffer=buffer, publisher=FakePublisher(down=True), stop=stop)
    waits = record_pauses(loop, stop, until=5)
    await loop.run()
    assert waits == [1, 2, 4, 4, 4]
    assert buffer.claimed == 50 + 4, "a full batch, then one probe per try"


@pytest.mark.parametrize(
    ("error", "stage"), [(TransientError("MongoDB is down"), "claim"), (RuntimeError("a bug"), "crash")]
)
async def test_mongodb_failures_and_bugs_back_off_and_the_loop_goes_on(error: Exception, stage: str) -> None:
    """A claim that fails (MongoDB down) or crashes (a bug) is logged with its stage, and the loop backs off and tries again."""
    settings = Settings(redelivery_backoff_base_s=1, redelivery_backoff_cap_s=2)
    stop = asyncio.Event()
    buffer = FakeBuffer(endless=True, claim_error=error)  # MongoDB unreachable, or a bug
    loop = loop_from(settings, buffer=buffer, publisher=FakePublisher(down=True), stop=stop)
    waits = record_pauses(loop, stop, until=3)
    with capture_logs() as logs:
        await loop.run()
    assert waits == [1, 2, 2] and buffer.claims == 3
    failures = [line for line in logs if line["event"] == "telemetry_redelivery_failed"]
    assert [line["stage"] for line in failures] == [stage] * 3


async def test_a_busy_loop_still_purges_tombstones_once_per_purge_interval() -> None:
    """A loop that always finds due documents (never idle) purges expired tombstones before its first batch, and not before every batch."""
    stop = asyncio.Event()
    buffer = FakeBuffer(endless=True)
    loop = loop_from(Settings(redelivery_batch_size=5), buffer=buffer, publisher=FakePublisher(), stop=stop)
    batches = 0

    async def deliver_batch(size: int) -> Any:
        nonlocal batches
        batches += 1
        report = await original(size)
        assert report.claimed == size, "every batch finds due documents: the loop is never idle"
        if batches == 3:
            stop.set()
        return report

    original = loop.deliver_batch
    loop.deliver_batch = deliver_batch  # type: ignore[method-assign]
    await loop.run()
    assert batches == 3 and buffer.purges == 1
