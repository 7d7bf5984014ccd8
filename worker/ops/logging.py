"""structlog setup: JSON lines off a terminal, coloured console on one, secrets scrubbed."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog
import structlog.tracebacks

from worker.ops.library_logs import route_library_logs
from worker.ops.metrics import LOG_LINES_DROPPED
from worker.ops.redaction import scrub


def scrub_credentials(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove URI credentials and every known secret value from every string, whatever logged it."""
    for key, value in event_dict.items():
        event_dict[key] = _scrub_nested(value)
    return event_dict


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_scrub_nested(item) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_nested(item) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))  # e.g. error=exc: the JSON renderer would str() it unscrubbed


def configure_logging(
    *, level: str = "INFO", fmt: str = "auto", library_log_interval_s: float = 60.0
) -> None:
    """Configure structlog (and stdlib logging of libraries) for the whole process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if use_console:
        renderer: Any = structlog.dev.ConsoleRenderer()
        factory: Any = structlog.PrintLoggerFactory(file=cast(TextIO, stderr_sink()))
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory = structlog.BytesLoggerFactory(file=cast(BinaryIO, stderr_sink()))
        shared.remove(structlog.processors.format_exc_info)
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(tracebacks))
    structlog.configure(
        # Scrubbing comes last, so rendered tracebacks are scrubbed too.
        processors=[*shared, scrub_credentials, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    route_library_logs(interval_s=library_log_interval_s)


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


class SafeSink:
    """Where log lines go: file descriptor 2, unbuffered, and a failed write is dropped, never raised.

    A closed pipe, a full disk or a closed descriptor (OSError, BrokenPipeError, ValueError) must not
    stop the worker or its shutdown; each lost line is counted in `persistence_log_lines_dropped_total`.
    Nothing stays buffered in Python, so the interpreter's exit has nothing left to flush.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.dropped = 0

    def write(self, data: str | bytes) -> int:
        raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(self._fd, view) :]
        except (OSError, ValueError):
            self.dropped += 1
            LOG_LINES_DROPPED.inc()
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: every write goes straight to the descriptor."""


def stderr_sink() -> SafeSink:
    """The sink for standard error's descriptor."""
    return SafeSink(sys.stderr.fileno() if _has_fileno(sys.stderr) else 2)


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
