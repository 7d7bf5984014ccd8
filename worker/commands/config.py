"""`persistence-worker config`: the effective settings, where each came from, and suspect variables."""

from __future__ import annotations

from enum import Enum

from pydantic import SecretStr

from worker.commands.exit_codes import ExitCode
from worker.ops.about import worker_version
from worker.ops.redaction import scrub
from worker.settings import Settings
from worker.settings_typos import UnknownVariable

HIDDEN = "<hidden>"
VALUE_COLUMN = 40
"""Values are padded to this width so the sources line up; longer ones push theirs out."""


def effective_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value as shown, "environment" or "default") for every setting, secrets hidden."""
    given = settings.model_fields_set
    rows = []
    for field in Settings.model_fields:
        source = "environment" if field in given else "default"
        rows.append((field.upper(), shown_value(settings, field), source))
    return rows


def shown_value(settings: Settings, field: str) -> str:
    """A setting's value as `config` prints it: the URI without credentials, other secrets hidden,
    the rest as an operator would type it."""
    value = getattr(settings, field)
    if field == "mongodb_uri":
        return settings.mongodb_uri_for_logs()
    if isinstance(value, SecretStr):
        return HIDDEN
    return scrub(as_typed(value))


def as_typed(value: object) -> str:
    """`value` as its environment variable would be written: an enum by its value, a list
    comma-separated (a set sorted), true/false, and nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return as_typed(value.value)
    if isinstance(value, frozenset | set):
        return ",".join(sorted(as_typed(item) for item in value))
    if isinstance(value, tuple | list):
        return ",".join(as_typed(item) for item in value)
    return str(value)


def config_command(settings: Settings, unknown: list[UnknownVariable]) -> int:
    """Print the table and the suspect variables; exit 0 (strict mode has stopped earlier)."""
    rows = effective_settings(settings)
    width = max(len(name) for name, _, _ in rows)
    value_width = min(VALUE_COLUMN, max(len(value) for _, value, _ in rows))
    print(f"# persistence-worker {worker_version()}: effective settings (secrets hidden)")
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {source}")
    if unknown:
        print("# variables that are not settings (ignored):")
    for variable in unknown:
        print(variable.describe())
    return ExitCode.OK
