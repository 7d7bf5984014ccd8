"""Libraries' stdlib logs as rate-limited structlog lines, and a log sink that never raises."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from worker.ops.library_logs import LibraryLogHandler, RateLimiter
from worker.ops.logging import SafeSink, configure_logging


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def library_logger() -> Iterator[tuple[logging.Logger, Clock]]:
    """A library-like stdlib logger whose records go only to a LibraryLogHandler on a hand-moved clock."""
    clock = Clock()
    logger = logging.getLogger("aiokafka.unit_test")
    handler = LibraryLogHandler(RateLimiter(60, clock))
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, clock
    logger.removeHandler(handler)
    logger.propagate = True


def test_repeats_within_the_interval_become_one_line_with_a_count(
    library_logger: tuple[logging.Logger, Clock],
) -> None:
    """The same message logged 50 times in an interval is one line; the next one says 49 were suppressed."""
    logger, clock = library_logger
    with capture_logs() as logs:
        for _ in range(50):
            logger.error("Unable connect to node with id %s: %s", 1, "refused")
        clock.now += 61
        logger.error("Unable connect to node with id %s: %s", 1, "refused")
    assert [line["event"] for line in logs] == ["library_log", "library_log"]
    first, second = logs
    assert first["library"] == "aiokafka.unit_test"
    assert first["message"] == "Unable connect to node with id 1: refused"
    assert first["log_level"] == "error" and "repeats_suppressed" not in first
    assert second["repeats_suppressed"] == 49


def test_distinct_messages_are_limited_separately(library_logger: tuple[logging.Logger, Clock]) -> None:
    """Two different messages each get their own line in the same interval; INFO lines are not written."""
    logger, _ = library_logger
    with capture_logs() as logs:
        logger.error("Unable connect to node %s", 1)
        logger.warning("Marking the coordinator dead (node %s)", 1)
        logger.error("Unable connect to node %s", 2)
        logger.info("Joined group")
    assert [line["message"] for line in logs] == [
        "Unable connect to node 1",
        "Marking the coordinator dead (node 1)",
    ]


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_routes_library_logs_through_structlog() -> None:
    """After configure_logging the root logger has exactly one handler, ours, instead of plain-text lines."""
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        configure_logging(level="INFO", fmt="json")
        assert [type(handler) for handler in root.handlers] == [LibraryLogHandler]
    finally:
        root.handlers[:] = saved


def test_a_broken_pipe_is_swallowed_and_counted() -> None:
    """Writing a line to a pipe whose reader is gone neither raises nor blocks; the lost line is counted."""
    before = REGISTRY.get_sample_value("persistence_log_lines_dropped_total") or 0.0
    read_end, write_end = os.pipe()
    os.close(read_end)
    sink = SafeSink(write_end)
    try:
        assert sink.write(b'{"event":"shutdown_requested"}\n') > 0
        sink.write("console line\n")
        sink.flush()
    finally:
        os.close(write_end)
    sink.write(b"closed descriptor\n")
    assert sink.dropped == 3
    assert REGISTRY.get_sample_value("persistence_log_lines_dropped_total") == before + 3


def test_the_rate_limiter_remembers_a_bounded_number_of_messages() -> None:
    """Beyond MAX_TRACKED_MESSAGES distinct messages the quiet ones are forgotten, so memory stays bounded."""
    from worker.ops.library_logs import MAX_TRACKED_MESSAGES

    clock = Clock()
    limiter = RateLimiter(60, clock)
    for index in range(MAX_TRACKED_MESSAGES):
        assert limiter.admit(("lib", 40, f"message {index}")) == 0
    clock.now += 61
    assert limiter.admit(("lib", 40, "one more")) == 0
    assert len(limiter._seen) == 1
