"""The one backoff: tenacity's `wait_exponential`, as a small `RetryPolicy` value.

The wait after failed attempt n is tenacity's: max(initial, min(max, coefficient * factor**(n-1))).
With the defaults (RETRY_*) that is 1 s, 2 s, 4 s ... capped at 60 s; the telemetry redelivery
has its own (REDELIVERY_BACKOFF_BASE_S * REDELIVERY_BACKOFF_FACTOR**(n-1), capped). Only
TransientError is retried by `with_retries`: the MongoDB adapter raises it for the PyMongoErrors
that mean "try again". Built once from Settings at the edges and passed to whoever retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from worker.errors import TransientError
from worker.ops.metrics import WRITE_RETRIES
from worker.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many attempts, and tenacity's exponential wait between them."""

    attempts: int
    initial_s: float
    """The least wait (tenacity's `min`)."""
    coefficient: float
    """The first wait before `initial_s` applies (tenacity's `multiplier`)."""
    max_s: float
    factor: float = 2.0
    """How much each wait grows (tenacity's `exp_base`)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The guide's policy (RETRY_*): MongoDB writes, partition pauses, the start-up wait."""
        return cls(
            attempts=settings.retry_max_attempts,
            initial_s=settings.retry_initial_interval_ms / 1000,
            coefficient=settings.retry_backoff_coefficient,
            max_s=settings.retry_max_interval_ms / 1000,
        )

    @classmethod
    def for_redelivery(cls, settings: Settings) -> RetryPolicy:
        """The telemetry redelivery's schedule (REDELIVERY_BACKOFF_*, TELEMETRY_MAX_DELIVERY_ATTEMPTS)."""
        return cls(
            attempts=settings.telemetry_max_delivery_attempts,
            initial_s=0.0,
            coefficient=settings.redelivery_backoff_base_s,
            max_s=settings.redelivery_backoff_cap_s,
            factor=settings.redelivery_backoff_factor,
        )

    def wait(self) -> wait_exponential:
        return wait_exponential(
            multiplier=self.coefficient, min=self.initial_s, max=self.max_s, exp_base=self.factor
        )

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based; below 1 counts as 1), from tenacity."""
        state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = max(attempt, 1)
        return float(self.wait()(state))


def _log_retry(operation: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        WRITE_RETRIES.labels(operation).inc()
        log.warning(
            "mongodb_write_retry",
            operation=operation,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=str(error),
        )

    return before_sleep


async def with_retries(
    policy: RetryPolicy, operation: str, call: Callable[[A], Awaitable[T]], argument: A
) -> T:
    """Await `call(argument)`, retrying TransientError per `policy`; the last error is re-raised."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait(),
        retry=retry_if_exception_type(TransientError),
        before_sleep=_log_retry(operation),
        reraise=True,
    )
    # A coroutine function, not a lambda: tenacity runs plain callables synchronously.
    return await retrying(call, argument)
