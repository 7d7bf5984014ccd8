"""The settings' own checks: settings that must go together, readable files, and one line per mistake.

worker.settings calls these from its validators; each problem names the environment variable,
never echoing a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.ops.redaction import scrub

SECRET_FIELDS = frozenset({"mongodb_uri", "kafka_sasl_password"})
SASL_FIELDS = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
SSL_FILE_FIELDS = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")

Problem = tuple[str, str]
"""(VARIABLE, what is wrong with it)."""


class CrossFieldProblems(ValueError):
    """Settings wrong together; `problems` holds (variable, what is wrong) pairs."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{name}: {text}" for name, text in problems))
        self.problems = problems


def cross_field_problems(values: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the settings `values` (field name -> value) taken together."""
    return [*_backoff_problems(values), *_sasl_problems(values), *_ssl_problems(values)]


def _backoff_problems(values: Mapping[str, Any]) -> list[Problem]:
    cap, base = values["redelivery_backoff_cap_s"], values["redelivery_backoff_base_s"]
    if cap >= base:
        return []
    why = f"{cap} is below REDELIVERY_BACKOFF_BASE_S ({base}); must be at least it"
    return [("REDELIVERY_BACKOFF_CAP_S", why)]


def _sasl_problems(values: Mapping[str, Any]) -> list[Problem]:
    protocol = values["kafka_security_protocol"]
    if protocol.startswith("SASL_"):
        missing = [field.upper() for field in SASL_FIELDS if values[field] is None]
        return [(name, f"required with KAFKA_SECURITY_PROTOCOL={protocol}") for name in missing]
    return _set_but_unused(
        values, SASL_FIELDS, "SASL", "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
    )


def _ssl_problems(values: Mapping[str, Any]) -> list[Problem]:
    if values["kafka_security_protocol"] not in ("SSL", "SASL_SSL"):
        return _set_but_unused(
            values, SSL_FILE_FIELDS, "TLS", "set KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL)"
        )
    if values["kafka_ssl_keyfile"] is not None and values["kafka_ssl_certfile"] is None:
        return [("KAFKA_SSL_KEYFILE", "set without KAFKA_SSL_CERTFILE, the certificate it belongs to")]
    return []


def _set_but_unused(
    values: Mapping[str, Any], fields: tuple[str, ...], feature: str, fix: str
) -> list[Problem]:
    """The `fields` that are set although the security protocol does not use `feature`."""
    protocol = values["kafka_security_protocol"]
    unused = [field.upper() for field in fields if values[field] is not None]
    why = f"set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use {feature}; {fix}, or unset it"
    return [(name, why) for name in unused]


def readable_file(path: Path | None) -> Path | None:
    """`path` when it names a file this process can read (None stays None), else ValueError."""
    if path is not None and not path.is_file():
        raise ValueError(f"no such file: {path}")
    if path is not None and not os.access(path, os.R_OK):
        raise ValueError(f"file not readable by this process: {path}")
    return path


def settings_error_lines(error: ValidationError) -> list[str]:
    """One line per wrong variable: its name, what is wrong, and the value unless secret."""
    lines: list[str] = []
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, CrossFieldProblems):
            lines.extend(f"configuration error: {name}: {text}" for name, text in cause.problems)
        elif item["loc"]:
            lines.append(_field_line(str(item["loc"][0]), item["msg"], item.get("input")))
        else:  # a model-level error: its input is every variable, secrets included; never shown
            lines.append(f"configuration error: {_message(item['msg'])}")
    return [scrub(line) for line in lines]


def _field_line(field: str, message: str, value: Any) -> str:
    shown = "<hidden>" if field in SECRET_FIELDS else repr(value)
    return f"configuration error: {field.upper()}: {_message(message)} (got {shown})"


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def format_settings_error(error: ValidationError) -> str:
    """`settings_error_lines` as one text."""
    return "\n".join(settings_error_lines(error))
