"""What the commands print: tables and JSON on stdout, progress on stderr.

Tables are as wide as the terminal, or 200 columns in a pipe. Progress of a job over a known
number of items is a rich bar on a terminal, plain lines otherwise, every 5% of the work or
every 5 seconds, whichever is first, so a log collector sees steady progress. A job reports
its own counts (`Counts`): their `describe()` is the same words its summary line uses, so that
`skipped=3` in progress is `skipped=3` at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

PIPE_WIDTH = 200
"""Off a terminal rich would wrap at 80 columns; logs and `| less` read better unwrapped."""
PLAIN_EVERY_S = 5.0


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A left-titled table whose long cells fold rather than vanish."""
    built = Table(title=title, title_justify="left")
    for column in columns:
        built.add_column(column, overflow="fold")
    for row in rows:
        built.add_row(*row)
    return built


def print_tables(*tables: Table) -> None:
    """Print to stdout (the results; progress and errors go to stderr)."""
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else PIPE_WIDTH)
    for each in tables:
        console.print(each)


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout; what JSON has no type for (dates, ObjectIds) as text."""
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str) + b"\n")


class Counts(Protocol):
    """A job's outcomes so far."""

    @property
    def done(self) -> int: ...
    def describe(self) -> str: ...


class Reporter(Protocol):
    def update(self, counts: Counts) -> None: ...


class PlainReporter:
    def __init__(self, *, label: str, total: int, stream: TextIO, start: Counts) -> None:
        self._label, self._total, self._stream = label, total, stream
        self._step = max(1, total // 20)
        self._next_at = self._step
        self._last_line = time.monotonic()
        self.last = (start.done, start.describe())
        self._shown: tuple[int, str] | None = None

    def update(self, counts: Counts) -> None:
        self.last = (counts.done, counts.describe())
        if counts.done < self._next_at and time.monotonic() - self._last_line < PLAIN_EVERY_S:
            return
        self.line()
        self._next_at = (counts.done // self._step + 1) * self._step

    def line(self) -> None:
        if self.last == self._shown:
            return
        self._shown = self.last
        done, described = self.last
        percent = 100 * done // self._total if self._total else 100
        print(f"{self._label}: {done}/{self._total} ({percent}%) {described}", file=self._stream, flush=True)
        self._last_line = time.monotonic()


class RichReporter:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress, self._task = progress, task_id

    def update(self, counts: Counts) -> None:
        self._progress.update(self._task, completed=counts.done, tally=counts.describe())


class SilentReporter:
    def update(self, counts: Counts) -> None:
        pass


@contextmanager
def reporting(
    label: str, total: int, start: Counts, *, stream: TextIO | None = None, silent: bool = False
) -> Iterator[Reporter]:
    """A reporter for `total` items, counted from `start`; the final state is shown when the block ends."""
    out = stream if stream is not None else sys.stderr
    if silent:
        yield SilentReporter()
        return
    if not out.isatty():
        plain = PlainReporter(label=label, total=total, stream=out, start=start)
        try:
            yield plain
        finally:
            plain.line()
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tally]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(file=out)) as progress:
        task = progress.add_task(label, total=total, tally=start.describe())
        yield RichReporter(progress, task)
