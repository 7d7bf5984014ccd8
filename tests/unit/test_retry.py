"""Specification of worker.retry: the guide's backoff and the retry of transient write failures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs
from tenacity import RetryCallState, wait_exponential

from worker.errors import OperationRefused, PermanentError, TransientError
from worker.retry import RetryPolicy, with_retries
from worker.settings import Settings

MakeSettings = Callable[..., Settings]


class FlakyCall:
    """An async call failing with the given errors in turn, then answering `done`."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.arguments: list[object] = []

    async def __call__(self, argument: object) -> str:
        self.arguments.append(argument)
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_default_backoff_is_1_2_4_seconds() -> None:
    """With the defaults the waits after attempts 1, 2 and 3 are 1 s, 2 s and 4 s."""
    settings = Settings()
    assert [backoff(settings, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_backoff_is_capped_at_the_max_interval() -> None:
    """The wait never exceeds RETRY_MAX_INTERVAL_MS."""
    settings = Settings()
    assert backoff(settings, 7) == 60.0
    assert backoff(settings, 30) == 60.0


def test_backoff_is_at_least_the_initial_interval(make_settings: MakeSettings) -> None:
    """Early waits are raised to RETRY_INITIAL_INTERVAL_MS when the exponential is smaller."""
    settings = make_settings(retry_backoff_coefficient=0.1, retry_initial_interval_ms=500)
    assert [backoff(settings, n) for n in (1, 2, 3, 4)] == [0.5, 0.5, 0.5, 0.8]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"retry_backoff_coefficient": 0.25, "retry_initial_interval_ms": 100, "retry_max_interval_ms": 3000},
        {"retry_backoff_coefficient": 3.0, "retry_initial_interval_ms": 0, "retry_max_interval_ms": 10_000},
    ],
)
def test_backoff_equals_the_wait_tenacity_computes(
    make_settings: MakeSettings, overrides: dict[str, float]
) -> None:
    """The policy built from the settings agrees with tenacity's wait for the same settings and attempt."""
    settings = make_settings(**overrides)
    for attempt in range(1, 12):
        assert backoff(settings, attempt) == pytest.approx(tenacity_wait(settings, attempt))


def test_backoff_equals_tenacity_when_initial_exceeds_max(make_settings: MakeSettings) -> None:
    """The policy built from the settings agrees with tenacity even when the initial interval is above the maximum."""
    settings = make_settings(retry_initial_interval_ms=5000, retry_max_interval_ms=1000)
    assert backoff(settings, 1) == pytest.approx(tenacity_wait(settings, 1))


def test_backoff_stays_capped_for_very_many_attempts() -> None:
    """However many attempts have failed, the wait is the maximum interval."""
    assert backoff(Settings(), 1100) == 60.0


def backoff(settings: Settings, attempt: int) -> float:
    return RetryPolicy.from_settings(settings).backoff_s(attempt)


def tenacity_wait(settings: Settings, attempt: int) -> float:
    wait = wait_exponential(
        multiplier=settings.retry_backoff_coefficient,
        min=settings.retry_initial_interval_ms / 1000,
        max=settings.retry_max_interval_ms / 1000,
    )
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


async def test_a_successful_call_is_made_once(fast_settings: Settings) -> None:
    """A call that succeeds returns its value after one attempt, with no retry logged."""
    call = FlakyCall()
    with capture_logs() as logs:
        assert await with_retries(RetryPolicy.from_settings(fast_settings), "incidents", call, ["doc"]) == "done"
    assert call.arguments == [["doc"]]
    assert logs == []


async def test_transient_errors_are_retried_until_success(fast_settings: Settings) -> None:
    """A TransientError is retried with the same argument, and the eventual result is returned."""
    call = FlakyCall(TransientError("primary stepped down"), TransientError("again"))
    assert await with_retries(RetryPolicy.from_settings(fast_settings), "incidents", call, "batch") == "done"
    assert call.arguments == ["batch", "batch", "batch"]


@pytest.mark.parametrize("attempts", [1, 3, 5])
async def test_transient_errors_stop_after_the_max_attempts(
    make_settings: MakeSettings, attempts: int
) -> None:
    """After RETRY_MAX_ATTEMPTS failed attempts the last TransientError is raised."""
    settings = make_settings(
        retry_max_attempts=attempts, retry_initial_interval_ms=0, retry_backoff_coefficient=1e-6
    )
    call = FlakyCall(*(TransientError(f"failure {n}") for n in range(1, 10)))
    with pytest.raises(TransientError, match=f"failure {attempts}$"):
        await with_retries(RetryPolicy.from_settings(settings), "incidents", call, None)
    assert len(call.arguments) == attempts


async def test_each_retry_logs_one_mongodb_write_retry(fast_settings: Settings) -> None:
    """Every retry logs `mongodb_write_retry` with the operation, attempt number and error."""
    call = FlakyCall(*(TransientError(f"timeout {n}") for n in range(1, 10)))
    with capture_logs() as logs, pytest.raises(TransientError):
        await with_retries(RetryPolicy.from_settings(fast_settings), "workflow_results", call, None)
    assert [(e["event"], e["log_level"], e["operation"], e["attempt"], e["error"]) for e in logs] == [
        ("mongodb_write_retry", "warning", "workflow_results", 1, "timeout 1"),
        ("mongodb_write_retry", "warning", "workflow_results", 2, "timeout 2"),
    ]
    assert all(isinstance(e["wait_s"], float) for e in logs)


@pytest.mark.parametrize(
    "error", [PermanentError("bad document"), OperationRefused("not authorized"), ValueError("a bug")]
)
async def test_other_errors_are_not_retried(fast_settings: Settings, error: Exception) -> None:
    """PermanentError and non-worker exceptions propagate after a single attempt, without retry logs."""
    call = FlakyCall(error)
    with capture_logs() as logs, pytest.raises(type(error)):
        await with_retries(RetryPolicy.from_settings(fast_settings), "incidents", call, None)
    assert len(call.arguments) == 1
    assert logs == []


async def test_with_retries_waits_the_policys_backoff() -> None:
    """The waits `with_retries` logs are the policy's own `backoff_s` for each attempt."""
    policy = RetryPolicy(attempts=3, initial_s=0.001, coefficient=0.001, max_s=0.003)
    call = FlakyCall(*(TransientError(f"timeout {n}") for n in range(1, 10)))
    with capture_logs() as logs, pytest.raises(TransientError):
        await with_retries(policy, "incidents", call, None)
    assert [e["wait_s"] for e in logs] == [round(policy.backoff_s(n), 3) for n in (1, 2)]


def test_the_redelivery_policy_reads_its_own_settings(make_settings: MakeSettings) -> None:
    """`RetryPolicy.for_redelivery` uses REDELIVERY_BACKOFF_* and TELEMETRY_MAX_DELIVERY_ATTEMPTS, no minimum wait."""
    settings = make_settings(redelivery_backoff_base_s=0.5, redelivery_backoff_factor=3,
                             redelivery_backoff_cap_s=10, telemetry_max_delivery_attempts=7)  # fmt: skip
    policy = RetryPolicy.for_redelivery(settings)
    assert policy == RetryPolicy(attempts=7, initial_s=0.0, coefficient=0.5, max_s=10, factor=3)
    assert [policy.backoff_s(n) for n in (0, 1, 2, 3, 4, 10_000)] == [0.5, 0.5, 1.5, 4.5, 10, 10]
