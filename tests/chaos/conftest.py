"""The fault-injection suite: its scale, the per-scenario result line, and the summary table.

CHAOS_SCALE=full (make chaos) runs every scenario at full size; unset or `short` runs the
short version that `make test` includes. Each scenario records its counts with the
`chaos_result` fixture; the terminal summary shows one line per scenario, and when
CHAOS_REPORT names a file the table replaces the part of that file between the markers
below (or the whole file when the markers are missing).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.chaos.invariant import Counts
from tests.support.servers import ServerKinds, current_kinds

_HERE = Path(__file__).parent
TABLE_START = "<!-- chaos-table:start -->"
TABLE_END = "<!-- chaos-table:end -->"


@dataclass(frozen=True, slots=True)
class Scale:
    name: Literal["short", "full"]

    def pick(self, short: int, full: int) -> int:
        return full if self.name == "full" else short


def current_scale() -> Scale:
    value = os.environ.get("CHAOS_SCALE", "short").strip().lower() or "short"
    if value not in ("short", "full"):
        raise pytest.UsageError(f"CHAOS_SCALE must be short or full, not {value!r}")
    return Scale(name="full" if value == "full" else "short")


@dataclass(slots=True)
class Row:
    scenario: str
    counts: Counts | None = None
    servers: str = ""
    outcome: str = "not run"
    duration_s: float = 0.0


_ROWS = pytest.StashKey[list[Row]]()
_ROW = pytest.StashKey[list[Row]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every chaos scenario talks to real servers: mark it `integration` too."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def scale() -> Scale:
    """short (make test) or full (make chaos), from CHAOS_SCALE."""
    return current_scale()


def servers_label(kinds: ServerKinds, *, kafka: str = "session", mongo: str = "session") -> str:
    """Which servers a scenario used, e.g. `kafka: tansu (session), mongo: nx-27017 (own, durable)`."""
    names = {"standin": ("tansu", "nx-27017"), "env": ("env", "env"), "container": ("container", "container")}
    kafka_name = "tansu" if kafka != "session" else names[kinds.kafka][0]
    mongo_name = names[kinds.mongo][1] if mongo == "session" else (
        "container" if kinds.mongo == "container" else "nx-27017")  # fmt: skip
    return f"kafka: {kafka_name} ({kafka}); mongo: {mongo_name} ({mongo})"


Record = Callable[..., None]


@pytest.fixture
def chaos_result(request: pytest.FixtureRequest, scale: Scale) -> Record:
    """`chaos_result(scenario, counts, servers=...)`: print the scenario's line and keep it for the table."""
    rows = [Row(scenario=request.node.name)]
    request.node.stash[_ROW] = rows
    request.config.stash[_ROWS].append(rows[0])

    def record(scenario: str, counts: Counts, *, servers: str) -> None:
        row = rows[-1]
        if row.counts is not None:  # a second line of the same scenario
            row = Row(scenario=scenario)
            rows.append(row)
            request.config.stash[_ROWS].append(row)
        row.scenario, row.counts, row.servers = scenario, counts, servers
        print(f"\nCHAOS [{scale.name}] {counts.line(scenario)}")

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    rows = item.stash.get(_ROW, [])
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for row in rows:
            row.duration_s = report.duration
            row.outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        if rows and hasattr(item.config, "workerinput"):
            # A pytest-xdist worker: the rows travel to the controller with the report.
            report.user_properties.append((_XDIST_ROWS, [_row_data(row) for row in rows]))
    return report


_XDIST_ROWS = "chaos_rows"


def _row_data(row: Row) -> dict[str, object]:
    counts = None if row.counts is None else dataclasses.asdict(row.counts)
    return {"scenario": row.scenario, "counts": counts, "servers": row.servers,
            "outcome": row.outcome, "duration_s": row.duration_s}  # fmt: skip


def rows_from_workers(terminalreporter: pytest.TerminalReporter) -> list[Row]:
    """On the pytest-xdist controller: the rows the workers sent with their reports."""
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name != _XDIST_ROWS:
                    continue
                for data in value:
                    counts = data["counts"]
                    rows.append(Row(scenario=data["scenario"], servers=data["servers"],
                                    counts=None if counts is None else Counts(**counts),
                                    outcome=data["outcome"], duration_s=data["duration_s"]))  # fmt: skip
    return rows


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summary(terminalreporter, terminalreporter.config.stash.get(_ROWS, []))


def write_summary(terminalreporter: pytest.TerminalReporter, rows: list[Row]) -> None:
    """The summary section, one line per scenario (none without rows). Under pytest-xdist the
    controller loads no conftest below tests/: tests/conftest.py calls this with `rows_from_workers`."""
    if not rows:
        return
    terminalreporter.section(f"chaos results ({current_scale().name})")
    for row in rows:
        line = row.counts.line(row.scenario) if row.counts else f"{row.scenario}: no counts"
        terminalreporter.write_line(f"{row.outcome.upper():7} {row.duration_s:6.1f}s  {line}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("CHAOS_REPORT")
    rows = session.config.stash.get(_ROWS, [])
    if not target or not rows:
        return
    write_report(Path(target), rows, current_scale(), current_kinds())


def summary_table(rows: list[Row], scale: Scale) -> str:
    lines = [
        "| scenario | scale | published | stored | dead-lettered | duplicates | lost | unexpected "
        "| stored & dead-lettered | result | duration | servers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        c = row.counts
        numbers = (
            [c.published, c.stored, c.dead_lettered, c.duplicates, c.lost, c.unexpected, c.both]
            if c
            else ["-"] * 7
        )
        cells = [
            row.scenario,
            scale.name,
            *map(str, numbers),
            row.outcome,
            f"{row.duration_s:.0f} s",
            row.servers,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(path: Path, rows: list[Row], scale: Scale, kinds: ServerKinds) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (
        f"{TABLE_START}\n_Generated by `make chaos` (CHAOS_SCALE={scale.name}) on {stamp}; "
        f"servers: kafka {kinds.kafka}, mongo {kinds.mongo}._\n\n{summary_table(rows, scale)}\n{TABLE_END}"
    )
    text = path.read_text() if path.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = f"# Reliability: the fault-injection suite\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
