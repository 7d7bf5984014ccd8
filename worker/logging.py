"""structlog setup: JSON lines off a terminal, coloured console on one, secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
import structlog.tracebacks

from worker.redact import scrub


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


def configure_logging(*, level: str = "INFO", fmt: str = "auto") -> None:
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
        factory: Any = structlog.PrintLoggerFactory(file=sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
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
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)
