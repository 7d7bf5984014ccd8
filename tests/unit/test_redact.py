"""Specification of worker.ops.redaction.scrub and the log processor built on it: no secret leaves the process."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import structlog

from worker.ops.logging import configure_logging, scrub_credentials
from worker.ops.redaction import MASK, forget_secrets, remember_secret, remember_uri_password, scrub


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def test_scrub_removes_uri_credentials_and_remembered_secrets() -> None:
    """URI credentials and a remembered SASL password are both masked wherever they appear."""
    remember_secret("sasl-Quokka-99")
    text = "login as svc/sasl-Quokka-99 failed; mongodb://admin:pw@db:27017 down"
    assert scrub(text) == f"login as svc/{MASK} failed; mongodb://{MASK}@db:27017 down"


def test_a_uri_password_is_remembered_in_its_decoded_and_encoded_forms() -> None:
    """A percent-encoded URI password is hidden both as written and decoded, even outside a URI."""
    remember_uri_password("mongodb://admin:p%40ss-Otter9@db1:27017/?authSource=admin")
    assert scrub("auth failed for p@ss-Otter9 (p%40ss-Otter9)") == f"auth failed for {MASK} ({MASK})"


def test_very_short_secrets_are_not_remembered() -> None:
    """A one- or two-character password is not masked everywhere, which would garble every line."""
    remember_secret("ab")
    assert scrub("about a table") == "about a table"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain text", "plain text"), ("mongodb://db1:27017/x", "mongodb://db1:27017/x")],
)
def test_text_without_secrets_is_unchanged(text: str, expected: str) -> None:
    """Text holding neither credentials nor remembered secrets comes back as it was."""
    assert scrub(text) == expected


def test_the_log_processor_masks_a_remembered_secret_without_an_at_sign() -> None:
    """A SASL password in a log value (no `user:pass@` around it) is masked too."""
    remember_secret("sasl-Quokka-99")
    event = scrub_credentials(
        None, "error", {"event": "kafka_failed", "error": "bad password sasl-Quokka-99"}
    )
    assert event["error"] == f"bad password {MASK}"


def test_the_log_processor_masks_secrets_in_non_string_values() -> None:
    """An exception object passed as a value is rendered scrubbed, not str()-ed later unscrubbed."""
    remember_secret("sasl-Quokka-99")
    event = scrub_credentials(
        None, "error", {"event": "x", "error": RuntimeError("pw sasl-Quokka-99"), "n": 3}
    )
    assert event == {"event": "x", "error": f"pw {MASK}", "n": 3}


@pytest.mark.usefixtures("restore_structlog")
def test_a_json_log_line_never_carries_a_remembered_secret(capfd: pytest.CaptureFixture[str]) -> None:
    """Through the configured JSON chain, a secret in the event name, a value or a list is masked."""
    remember_secret("sasl-Quokka-99")
    configure_logging(level="INFO", fmt="json")
    structlog.get_logger("t").warning("x sasl-Quokka-99", hosts=["a", "sasl-Quokka-99"])
    line = orjson.loads(capfd.readouterr().err.splitlines()[-1])  # the sink writes to fd 2
    assert "sasl-Quokka-99" not in str(line)
    assert line["hosts"] == ["a", MASK]


def test_an_unescaped_password_in_a_uri_is_hidden_whole() -> None:
    """A password holding `@` and `/` (invalid, but typed) leaves no part of itself in scrubbed text."""
    remember_uri_password("mongodb://svc:p@ss/w0rd-Lynx@db1:27017/orchestrator")
    scrubbed = scrub("cannot parse mongodb://svc:p@ss/w0rd-Lynx@db1:27017/orchestrator")
    assert "w0rd-Lynx" not in scrubbed and "p@ss" not in scrubbed
