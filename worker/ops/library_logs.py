"""The libraries' stdlib logs (aiokafka, pymongo, asyncio) as our JSON lines, rate-limited.

During an outage aiokafka repeats the same error many times a second; each distinct message
(logger, level and message template) is written at most once per interval, with the number
of repeats suppressed since its previous line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

LIBRARY_LEVEL = logging.WARNING
"""Libraries' lines below this level are not written."""
MAX_TRACKED_MESSAGES = 1000
"""Distinct messages remembered for rate limiting; the quiet ones are forgotten beyond this."""


@dataclass
class _Seen:
    written_at: float
    suppressed: int = 0


class RateLimiter:
    """Decides per key whether a line is written now, and how many repeats it swallowed before."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def admit(self, key: tuple[str, int, str]) -> int | None:
        """None: suppress this repeat. Else write it, saying how many repeats were suppressed before."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.written_at < self.interval_s:
            seen.suppressed += 1
            return None
        suppressed = seen.suppressed if seen is not None else 0
        if len(self._seen) >= MAX_TRACKED_MESSAGES:
            self._forget_quiet(now)
        self._seen[key] = _Seen(written_at=now)
        return suppressed

    def _forget_quiet(self, now: float) -> None:
        """Keep memory bounded: drop messages last written over an interval ago (or all, if none is)."""
        quiet = [key for key, seen in self._seen.items() if now - seen.written_at >= self.interval_s]
        for key in quiet or list(self._seen):
            del self._seen[key]


class LibraryLogHandler(logging.Handler):
    """A stdlib handler writing each admitted record as a structlog `library_log` event."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__(level=LIBRARY_LEVEL)
        self.limiter = limiter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            suppressed = self.limiter.admit((record.name, record.levelno, str(record.msg)))
            if suppressed is None:
                return
            fields: dict[str, object] = {"library": record.name, "message": record.getMessage()}
            if suppressed:
                fields["repeats_suppressed"] = suppressed
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                fields["error"] = f"{type(error).__name__}: {error}"
            structlog.get_logger(record.name).log(record.levelno, "library_log", **fields)
        except Exception:  # a log line must never break the library that wrote it
            return


def route_library_logs(*, interval_s: float) -> LibraryLogHandler:
    """Replace the root logger's handlers by one `LibraryLogHandler` (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = LibraryLogHandler(RateLimiter(interval_s))
    root.addHandler(handler)
    root.setLevel(LIBRARY_LEVEL)
    return handler


def mute_library_logs() -> None:
    """No library line at all, for a one-shot command that says what failed itself (`check`)."""
    logging.getLogger().setLevel(logging.CRITICAL + 1)
