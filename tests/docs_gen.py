"""docs/configuration.md's settings reference, generated from the Settings model (worker/settings.py).

Every field gives one row: its environment variable, type and range, default, and its docstring.
`python -m tests.docs_gen` rewrites the block between the markers (the rest of the page is written
by hand); `--check` only says whether the committed block differs. tests/unit/test_docs.py fails
when it does, and rewrites it when run with DOCS_REGENERATE=1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from worker.settings import Settings
from worker.settings_checks import SECRET_FIELDS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MongoDB", ("mongodb_",)),
    ("Kafka", ("kafka_", "batch_linger_ms")),
    ("Kafka security", ("kafka_security_", "kafka_sasl_", "kafka_ssl_")),
    ("Input limits and dead letters",
     ("max_event_bytes", "max_nesting_depth", "kafka_dlq_suffix", "kafka_max_request_bytes", "dlq_")),
    ("Retries, fail-open and fail-closed", ("retry_", "fail_closed_routes")),
    ("Routes and write priority", ("route_", "mongodb_write_concurrency")),
    ("Telemetry redelivery", ("redelivery_", "telemetry_", "kafka_telemetry_delivery_topic")),
    ("Retention (TTL indexes)", ("ttl_",)),
    ("Start-up, probes and HTTP",
     ("mongodb_startup_", "mongodb_health_", "kafka_health_", "health_", "http_", "index_check_")),
    ("Process and logs", ("",)),
)  # fmt: skip
"""Headings in page order; a field goes under the heading with the longest prefix of its name."""


def section_of(name: str) -> str:
    prefixes = [
        (len(prefix), title) for title, group in SECTIONS for prefix in group if name.startswith(prefix)
    ]
    return max(prefixes)[1]


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def bounds(field: FieldInfo) -> list[str]:
    found = []
    for constraint in field.metadata:
        if isinstance(constraint, Ge | Gt | Le | Lt):
            attribute, sign = {Ge: ("ge", "≥"), Gt: ("gt", ">"), Le: ("le", "≤"), Lt: ("lt", "<")}[
                type(constraint)
            ]
            found.append(f"{sign} {number(getattr(constraint, attribute))}")
        elif isinstance(constraint, MinLen) and constraint.min_length == 1:
            found.append("not empty")
    return found


def base_type(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(annotation))
    if get_origin(annotation) in (frozenset, tuple):
        return "comma-separated route names"
    names = {int: "integer", float: "number", bool: "`true` or `false`", str: "text", SecretStr: "text, secret",
             Path: "file path"}  # fmt: skip
    return names[annotation]


def type_text(field: FieldInfo) -> str:
    annotation, optional = field.annotation, False
    if get_origin(annotation) in (Union, types.UnionType):
        arguments = [argument for argument in get_args(annotation) if argument is not type(None)]
        annotation, optional = arguments[0], len(arguments) < len(get_args(annotation))
    text = ", ".join([base_type(annotation), *bounds(field)])
    return f"{text}; or unset" if optional else text


def default_text(name: str, default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, frozenset | tuple):
        return f"`{','.join(item.value for item in default)}`" if default else "empty"
    if isinstance(default, Enum):
        return f"`{default.value}`"
    if isinstance(default, float):
        return f"`{number(default)}`"
    if isinstance(default, int) and name.endswith("_bytes") and default >= 1024 and default % 1024 == 0:
        size = f"{default // 1024**2} MiB" if default % 1024**2 == 0 else f"{default // 1024} KiB"
        return f"`{default}` ({size})"
    return f"`{default}`"


def meaning(name: str, field: FieldInfo) -> str:
    text = " ".join((field.description or "").split()).replace("|", "\\|")
    if name in SECRET_FIELDS and "secret" not in text:
        text += " A secret: never logged."
    return text


def row(name: str, field: FieldInfo) -> str:
    cells = [f"`{name.upper()}`", type_text(field), default_text(name, field.default), meaning(name, field)]
    return "| " + " | ".join(cells) + " |"


def reference() -> str:
    """The generated block, markers included."""
    lines = [
        START,
        "_Generated from `worker/settings.py` by `python -m tests.docs_gen`; do not edit by hand._",
    ]
    for title, _ in SECTIONS:
        fields = [(name, field) for name, field in Settings.model_fields.items() if section_of(name) == title]
        if not fields:
            continue
        lines += ["", f"### {title}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        lines += [row(name, field) for name, field in fields]
    return "\n".join([*lines, END])


def with_reference(text: str, block: str) -> str:
    """`text` with the block between the markers replaced by `block`."""
    before, rest = text.split(START, 1)
    return before + block + rest.split(END, 1)[1]


def committed_block(text: str) -> str:
    match = re.search(re.escape(START) + ".*?" + re.escape(END), text, flags=re.DOTALL)
    return match.group(0) if match else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.docs_gen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/configuration.md differs; write nothing"
    )
    arguments = parser.parse_args(argv)
    text, block = DOC.read_text(), reference()
    if committed_block(text) == block:
        return 0
    if arguments.check:
        print(
            f"{DOC.relative_to(ROOT)} differs from the settings: run `python -m tests.docs_gen`",
            file=sys.stderr,
        )
        return 1
    DOC.write_text(with_reference(text, block))
    print(f"rewrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
