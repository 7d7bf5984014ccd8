"""The guide's retry policy (tenacity), shared by every MongoDB write.

Wait before retry n = min(max_interval, max(initial_interval, coefficient * 2**(n-1)) s),
which with the defaults gives 1 s, 2 s, 4 s ... capped at 60 s. Only TransientError is
retried: the MongoDB adapter raises it for the PyMongoErrors that mean "try again".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """The wait after failed attempt number `attempt` (1-based), as tenacity computes it."""
    exponential = settings.retry_backoff_coefficient * 2.0 ** min(attempt - 1, 64)
    initial = settings.retry_initial_interval_ms / 1000
    # As tenacity's wait_exponential: clamp to max, then the initial interval (min) wins.
    return float(max(initial, min(exponential, settings.retry_max_interval_ms / 1000)))


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
    settings: Settings, operation: str, call: Callable[[A], Awaitable[T]], argument: A
) -> T:
    """Await `call(argument)`, retrying TransientError per the settings; the last error is re-raised."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(settings.retry_max_attempts),
        wait=wait_exponential(
            multiplier=settings.retry_backoff_coefficient,
            min=settings.retry_initial_interval_ms / 1000,
            max=settings.retry_max_interval_ms / 1000,
        ),
        retry=retry_if_exception_type(TransientError),
        before_sleep=_log_retry(operation),
        reraise=True,
    )
    # A coroutine function, not a lambda: tenacity runs plain callables synchronously.
    return await retrying(call, argument)
