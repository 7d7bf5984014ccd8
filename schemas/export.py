"""Writes the published JSON Schemas of the events, one file per input topic, to schemas/json/.

`python -m schemas.export` regenerates them from the models; `--check` writes nothing and
exits 1 naming each file that differs. schemas/asyncapi.yaml is written by hand and refers
to these files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent

SCHEMA_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "validation": ValidationEvent,
    "results": WorkflowResultEvent,
    "incidents": IncidentEvent,
    "telemetry": TelemetryEvent,
}
"""Route name (as in FAIL_CLOSED_ROUTES) -> the model of that topic's payload."""


def schema_file(route: str) -> str:
    return f"{route}.schema.json"


def render(route: str, model: type[BaseModel]) -> str:
    """The checked-in text of one event's JSON Schema: sorted keys, two-space indent, final newline."""
    schema = {"$schema": DIALECT, "$id": schema_file(route), **model.model_json_schema(mode="validation")}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(directory: Path) -> dict[Path, str | None]:
    """Every file the directory should hold with its text; None marks a stray schema to remove."""
    wanted: dict[Path, str | None] = {
        directory / schema_file(route): render(route, model) for route, model in EVENT_MODELS.items()
    }
    strays = {path: None for path in directory.glob("*.schema.json") if path not in wanted}
    return wanted | strays


def drifted(files: dict[Path, str | None]) -> list[Path]:
    """The files whose content on disk is not what it should be (missing, different or stray)."""
    return [path for path, text in files.items() if _read(path) != text]


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def main(argv: Sequence[str] | None = None, *, directory: Path = SCHEMA_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file has drifted")
    check = parser.parse_args(argv).check
    files = expected_files(directory)
    stale = drifted(files)
    if check:
        for path in stale:
            print(f"drifted: {os.path.relpath(path)} (regenerate: python -m schemas.export)", file=sys.stderr)
        return 1 if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    for path in stale:
        text = files[path]
        if text is None:
            path.unlink()
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
        print(f"{'removed' if text is None else 'wrote'} {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
