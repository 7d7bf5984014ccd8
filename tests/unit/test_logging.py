"""Specification of credential redaction (worker.ops.redaction) and the log setup (worker.ops.logging)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from worker.ops.logging import configure_logging, scrub_credentials
from worker.ops.redaction import redact_uri

Processor = Callable[[Any, str, Any], Any]


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("mongodb://admin:s3cret@db:27017/orchestrator", "mongodb://***@db:27017/orchestrator"),
        (
            "mongodb+srv://svc-user:p%40ss@cluster0.example.net/?retryWrites=true",
            "mongodb+srv://***@cluster0.example.net/?retryWrites=true",
        ),
        (
            "mongodb://user@db1:27017,db2:27017/?replicaSet=rs0",
            "mongodb://***@db1:27017,db2:27017/?replicaSet=rs0",
        ),
    ],
    ids=["mongodb", "mongodb+srv", "user-only"],
)
def test_redact_uri_hides_user_and_password(uri: str, redacted: str) -> None:
    """`user:password@` in mongodb:// and mongodb+srv:// URIs becomes `***@`; host and options stay."""
    assert redact_uri(uri) == redacted


@pytest.mark.parametrize(
    "text", ["mongodb://localhost:27017", "mongodb://db/?w=majority", "no uri here, mail me@example.com"]
)
def test_redact_uri_leaves_text_without_credentials_unchanged(text: str) -> None:
    """Text holding no credentials is returned as it was."""
    assert redact_uri(text) == text


def test_redact_uri_redacts_uris_inside_longer_text() -> None:
    """Every URI inside a message is redacted, not only a URI that is the whole text."""
    text = "primary mongodb://a:pw1@h1 failed, fallback mongodb+srv://b:pw2@h2 too"
    assert redact_uri(text) == "primary mongodb://***@h1 failed, fallback mongodb+srv://***@h2 too"


def test_redact_uri_hides_a_password_holding_an_unescaped_at_sign() -> None:
    """No part of a password survives redaction, even a malformed one containing `@`."""
    assert "t-tail" not in redact_uri("mongodb://admin:s3cr@t-tail@db:27017")


def test_scrub_credentials_scrubs_every_string_value() -> None:
    """The processor redacts URIs in any string value of the event dict, whatever its key."""
    event = {
        "event": "mongodb_unavailable mongodb://u:p@h",
        "uri": "mongodb://u:secret@db:27017",
        "error": "ServerSelectionTimeoutError: mongodb+srv://svc:pw@cluster: timed out",
        "attempt": 3,
        "flag": None,
    }
    scrubbed = scrub_credentials(None, "warning", dict(event))
    assert scrubbed == {
        "event": "mongodb_unavailable mongodb://***@h",
        "uri": "mongodb://***@db:27017",
        "error": "ServerSelectionTimeoutError: mongodb+srv://***@cluster: timed out",
        "attempt": 3,
        "flag": None,
    }


def test_scrub_credentials_applies_to_any_logger() -> None:
    """Run as a structlog processor, it scrubs what a library-style log call passes."""
    log = structlog.get_logger("some.library")
    with capture_logs(processors=[scrub_credentials]) as logs:
        log.info("connecting", target="mongodb://root:toor@mongo:27017")
    assert logs == [{"event": "connecting", "target": "mongodb://***@mongo:27017", "log_level": "info"}]


def configured_processors(fmt: str) -> list[Processor]:
    configure_logging(level="INFO", fmt=fmt)
    return list(structlog.get_config()["processors"])


def run_chain(processors: list[Processor], event: dict[str, Any]) -> Any:
    value: Any = event
    for processor in processors:
        value = processor(None, "error", value)
    return value


@pytest.mark.usefixtures("restore_structlog")
def test_json_logging_renders_one_json_object_with_level_and_utc_time() -> None:
    """In JSON mode each line is a JSON object with event, level, a UTC ISO timestamp, and scrubbed values."""
    line = run_chain(
        configured_processors("json"), {"event": "mongodb_unavailable", "uri": "mongodb://u:p@h"}
    )
    record = orjson.loads(line)
    assert record["event"] == "mongodb_unavailable"
    assert record["level"] == "error"
    assert record["timestamp"].endswith("Z")
    assert record["uri"] == "mongodb://***@h"


@pytest.mark.usefixtures("restore_structlog")
def test_context_variables_appear_on_every_line() -> None:
    """Values bound with bind_contextvars (topic, partition, offset) are merged into each line."""
    processors = configured_processors("json")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(topic="orchestrator.results", partition=2, offset=41)
    try:
        record = orjson.loads(run_chain(processors, {"event": "workflow_result_saved"}))
    finally:
        structlog.contextvars.clear_contextvars()
    assert (record["topic"], record["partition"], record["offset"]) == ("orchestrator.results", 2, 41)


@pytest.mark.usefixtures("restore_structlog")
def test_console_logging_scrubs_tracebacks() -> None:
    """In console mode an exception's message is scrubbed like any other value."""
    processors = configured_processors("console")[:-1]  # the event dict before rendering
    try:
        raise RuntimeError("cannot reach mongodb://admin:hunter2@db:27017")
    except RuntimeError:
        event = run_chain(processors, {"event": "batch_failed", "exc_info": True})
    assert "hunter2" not in str(event)


@pytest.mark.usefixtures("restore_structlog")
def test_json_logging_scrubs_tracebacks() -> None:
    """In JSON mode an exception's message is scrubbed like any other value."""
    processors = configured_processors("json")
    try:
        raise RuntimeError("cannot reach mongodb://admin:hunter2@db:27017")
    except RuntimeError:
        line = run_chain(processors, {"event": "batch_failed", "exc_info": True})
    assert b"hunter2" not in line
