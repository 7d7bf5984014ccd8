"""Progress of a job over a known number of items: a rich bar on a terminal, plain lines otherwise.

Both write to stderr (stdout keeps the tables and the summary); plain lines come every 5%
of the work or every 5 seconds, whichever is first, so a log collector sees steady progress.
A command names the three outcomes with the words of its summary line (`words`), so that
`skipped=3` in progress is `skipped=3` at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S = 5.0
OUTCOMES = ("sent", "failed", "skipped")


@dataclass(slots=True)
class Tally:
    """Outcomes so far: every chosen item ends as exactly one of these."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    words: tuple[str, str, str] = field(default=OUTCOMES, compare=False)
    """How the command's summary names the three outcomes."""

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    def describe(self) -> str:
        counts = (self.sent, self.failed, self.skipped)
        return " ".join(f"{word}={count}" for word, count in zip(self.words, counts, strict=True))


class Reporter(Protocol):
    def update(self, tally: Tally) -> None: ...


class PlainReporter:
    def __init__(
        self, *, label: str, total: int, stream: TextIO, words: tuple[str, str, str] = OUTCOMES
    ) -> None:
        self._label, self._total, self._stream = label, total, stream
        self._step = max(1, total // 20)
        self._next_at = self._step
        self._last_line = time.monotonic()
        self.last = Tally(words=words)
        self._shown: Tally | None = None

    def update(self, tally: Tally) -> None:
        self.last = replace(tally)
        if tally.done < self._next_at and time.monotonic() - self._last_line < PLAIN_EVERY_S:
            return
        self.line()
        self._next_at = (tally.done // self._step + 1) * self._step

    def line(self) -> None:
        if self.last == self._shown:
            return
        self._shown = replace(self.last)
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
    label: str,
    total: int,
    *,
    stream: TextIO | None = None,
    silent: bool = False,
    words: tuple[str, str, str] = OUTCOMES,
) -> Iterator[Reporter]:
    """A reporter for `total` items; the final state is shown when the block ends."""
    out = stream if stream is not None else sys.stderr
    if silent:
        yield SilentReporter()
        return
    if not out.isatty():
        plain = PlainReporter(label=label, total=total, stream=out, words=words)
        try:
            yield plain
        finally:
            plain.line()
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tally]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(file=out)) as progress:
        task = progress.add_task(label, total=total, tally=Tally(words=words).describe())
        yield RichReporter(progress, task)
