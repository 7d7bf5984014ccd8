"""What the demo prints, as plain text: tables with named columns and labels a newcomer reads
without the code (valid / invalid, the counters per route, whole log lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = ("consumed", "stored", "skipped", "dead_lettered")
"""The per-route counters, each `persistence_records_<name>_total` on /metrics."""
COUNTERS_LEGEND = (
    "stored: safely in MongoDB, written now or already there (a duplicate counts as stored)",
    "skipped: of those, duplicates already there, not written again",
    "dead_lettered: refused, sent to the route's dead-letter topic",
    "consumed = stored + dead_lettered, on every route",
)


def format_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The title, a header naming every column, then the rows; each column as wide as its widest cell."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(text) for text in column) for column in zip(columns, *cells, strict=False)]
    lines = [title]
    for row in [list(columns), *cells]:
        lines.append(
            "  " + "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        )
    return lines


def outcome_label(valid: object) -> str:
    """`valid` or `invalid` for the stored boolean, whichever way the server hands it back
    (True/False from MongoDB, 1/0 from nx-27017's $group)."""
    if valid is None:
        return "(no result)"
    return "valid" if valid else "invalid"


def route_counters(metrics_text: str) -> dict[str, dict[str, int]]:
    """Per route, the counters of COUNTERS read from a /metrics page (dead letters summed over error types)."""
    counters: dict[str, Counter[str]] = {}
    names = {f"persistence_records_{name}": name for name in COUNTERS}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in names:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                route = sample.labels["route"]
                counters.setdefault(route, Counter())[names[family.name]] += int(sample.value)
    return {route: {name: found[name] for name in COUNTERS} for route, found in counters.items()}


def counters_table(title: str, counters: Mapping[str, Mapping[str, int]]) -> list[str]:
    rows = [(route, *(values[name] for name in COUNTERS)) for route, values in sorted(counters.items())]
    return format_table(title, ("route", *COUNTERS), rows)


def event_counts(lines: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(event, how many lines) for the worker's log, by event name."""
    return sorted(Counter(str(line["event"]) for line in lines).items())


def sample_line(lines: Sequence[Mapping[str, Any]], event: str) -> Mapping[str, Any] | None:
    """The first line of `event`, preferring one that skipped duplicates (it shows every count)."""
    of_event = [line for line in lines if line["event"] == event]
    return next((line for line in of_event if line.get("skipped")), of_event[0] if of_event else None)
