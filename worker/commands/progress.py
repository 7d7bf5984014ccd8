"""Progress of a job over a known number of items: a rich bar on a terminal, plain lines otherwise.

Both write to stderr (stdout keeps the tables and the summary); plain lines come every 5%
of the work or every 5 seconds, whichever is first, so a log collector sees steady progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S = 5.0


@dataclass(slots=True)
class Tally:
    """Outcomes so far: every chosen item ends as exactly one of these."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    def describe(self) -> str:
        return f"sent={self.sent} failed={self.failed} skipped={self.skipped}"


class Reporter(Protocol):
    def update(self, tally: Tally) -> None: ...


class PlainReporter:
    def __init__(self, *, label: str, total: int, stream: TextIO) -> None:
        self._label, self._total, self._stream = label, total, stream
        self._step = max(1, total // 20)
        self._next_at = self._step
        self._last_line = time.monotonic()
        self.last = Tally()
        self._shown: Tally | None = None

    def update(self, tally: Tally) -> None:
        self.last = Tally(tally.sent, tally.failed, tally.skipped)
        if tally.done < self._next_at and time.monotonic() - self._last_line < PLAIN_EVERY_S:
            return
        self.line()
        self._next_at = (tally.done // self._step + 1) * self._step

    def line(self) -> None:
        if self.last == self._shown:
            return
        self._shown = Tally(self.last.sent, self.last.failed, self.last.skipped)
        done = self.last.done
        percent = 100 * done // self._total if self._total else 100
        print(f"{self._label}: {done}/{self._total} ({percent}%) {self.last.describe()}",
              file=self._stream, flush=True)  # fmt: skip
        self._last_line = time.monotonic()


class RichReporter:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress, self._task = progress, task_id

    def update(self, tally: Tally) -> None:
        self._progress.update(self._task, completed=tally.done, tally=tally.describe())


class SilentReporter:
    def update(self, tally: Tally) -> None:
        pass


@contextmanager
def reporting(
    label: str, total: int, *, stream: TextIO | None = None, silent: bool = False
) -> Iterator[Reporter]:
    """A reporter for `total` items; the final state is shown when the block ends."""
    out = stream if stream is not None else sys.stderr
    if silent:
        yield SilentReporter()
        return
    if not out.isatty():
        plain = PlainReporter(label=label, total=total, stream=out)
        try:
            yield plain
        finally:
            plain.line()
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tally]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(file=out)) as progress:
        yield RichReporter(progress, progress.add_task(label, total=total, tally=Tally().describe()))
