"""`persistence-worker config`: the effective settings, where each came from, and suspect variables."""

from __future__ import annotations

from pathlib import Path

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
    """A setting's value as `config` prints it: the URI without credentials, other secrets hidden."""
    value = getattr(settings, field)
    if field == "mongodb_uri":
        return settings.mongodb_uri_for_logs()
    if isinstance(value, SecretStr):
        return HIDDEN
    if value is None:
        return "unset"
    if isinstance(value, frozenset):
        return ",".join(sorted(str(item) for item in value)) or "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return str(value)
    return scrub(str(value))


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
