"""Pure measuring helpers: CPU time from /proc/<pid>/stat, percentiles, a drain's rate from log lines."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

# Fields of /proc/<pid>/stat after the `(comm)` field: state is the first, utime the 12th, stime the 13th.
UTIME, STIME = 11, 12


def cpu_ticks(stat_line: str) -> int:
    """utime + stime, in clock ticks, of one /proc/<pid>/stat line.

    The process name (`comm`, in parentheses) may hold spaces and parentheses itself, so the
    fields are counted from the last `)`.
    """
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[UTIME]) + int(fields[STIME])


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process so far (all its threads); "self": this process."""
    return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The value at fraction `q` (0-1) of the sorted values (nearest rank, no interpolation)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Spent:
    """What a phase handled: events, wall seconds and the CPU seconds of the process doing it."""

    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6


def span_rate(writes: Iterable[tuple[float, int]]) -> tuple[int, float]:
    """(records, seconds) from the first write to the last, given (time, records) of each write.

    The first write's records are left out: its time marks the start, not the end, of their work.
    """
    ordered = sorted(writes)
    if len(ordered) < 2:
        raise ValueError("a span needs at least two writes")
    return sum(count for _, count in ordered[1:]), ordered[-1][0] - ordered[0][0]


FIRST_WRITE_S = 0.005
"""Saved lines this close to a route's first one are that write's: the worker logs a line per
partition right after each bulk write returns."""

SavedLine = tuple[float, int, str]
"""(time, records, topic) of a saved line."""


def steady_span(lines: Iterable[SavedLine]) -> tuple[int, float]:
    """(records, seconds) of a drain once every route has written once, given its saved lines.

    The clock starts at the last route's first line: by then every route's member has fetched,
    prepared and written a batch, and the batches the others had in hand when one route's first
    write returned (counted, though their work came before) are written. The lines up to
    FIRST_WRITE_S after it are left out, the lines after are counted, up to the last.
    """
    ordered = sorted(lines)
    firsts: dict[str, float] = {}
    for moment, _, topic in ordered:
        firsts.setdefault(topic, moment)
    if not firsts:
        raise ValueError("no writes")
    start = max(firsts.values())
    after = [(moment, count) for moment, count, _ in ordered if moment > start + FIRST_WRITE_S]
    if not after:
        raise ValueError("a span needs writes after every route's first")
    return sum(count for _, count in after), after[-1][0] - start


Progress = Sequence[tuple[float, int]]
"""(seconds, documents still pending) of a drain, in time order; the first is the start."""


def crossing_time(points: Progress, level: float) -> float:
    """When the pending count first came down to `level`, interpolated linearly between samples."""
    previous: tuple[float, int] | None = None
    for moment, pending in points:
        if pending <= level:
            if previous is None or previous[1] == pending:
                return moment
            before, was = previous
            return before + (moment - before) * (was - level) / (was - pending)
        previous = (moment, pending)
    raise ValueError(f"the pending count never came down to {level:g}")


def tenth_rates(points: Progress, total: int) -> list[float]:
    """Documents per second over each tenth of a drain of `total`: 100 % → 90 % pending, ..., 10 % → 0 %.

    The drain starts when the count last stood at `total` (a slow start-up is not its first tenth's).
    """
    began = max(moment for moment, pending in points if pending >= total)
    marks = [began] + [crossing_time(points, total * (9 - tenth) / 10) for tenth in range(10)]
    return [total / 10 / (end - start) for start, end in pairwise(marks)]
