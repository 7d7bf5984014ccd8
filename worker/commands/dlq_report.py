"""What `dlq replay` counts, its summary line, and its dry-run tables.

Progress lines and the summary use the same words: `replayed`, `still_dead`, `not_chosen`.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

from worker.commands.dlq_records import ERROR_MESSAGE_HEADER, ERROR_REASON_HEADER, error_type, header
from worker.commands.progress import Tally
from worker.commands.tables import print_tables, table
from worker.pipeline.records import Record

WORDS = ("replayed", "still_dead", "not_chosen")
SAMPLE_ROWS = 10


@dataclass(slots=True)
class Summary:
    """What a run read and did; `tally()` is its progress in the summary's words."""

    per_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(dead-letter topic, error type) -> chosen records read."""
    sample: list[Record] = field(default_factory=list)
    read: int = 0
    """Records read below the ends, chosen or not."""
    not_chosen: int = 0
    replayed: int = 0
    still_dead: Counter[str] = field(default_factory=Counter)
    """"error type:reason" -> chosen records that failed again (--direct)."""
    error: str | None = None
    refused: bool = False
    """The run ended because a server refused us (exit 3, as for any command)."""

    @property
    def chosen(self) -> int:
        return sum(self.per_type.values())

    def tally(self) -> Tally:
        return Tally(sent=self.replayed, failed=sum(self.still_dead.values()), skipped=self.not_chosen,
                     words=WORDS)  # fmt: skip

    def count(self, record: Record, kind: str) -> None:
        """A chosen record read: counted per (topic, error type), the first ones kept as a sample."""
        self.per_type[(record.topic, kind)] += 1
        if len(self.sample) < SAMPLE_ROWS:
            self.sample.append(record)


def print_summary(summary: Summary, *, state: str, mode: str, group: str) -> None:
    """`dlq replay done|interrupted: read=.. chosen=.. replayed=.. still_dead=.. not_chosen=..`."""
    print(f"dlq replay {state}: read={summary.read} chosen={summary.chosen} {summary.tally().describe()} "
          f"({mode}; group {group})")  # fmt: skip
    for reason, count in sorted(summary.still_dead.items()):
        print(f"  still dead: {count} x {reason} (left in the dead-letter topic)")
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)


def print_dry_run(summary: Summary, total: int) -> None:
    """The counts, then per error type and a sample of the chosen records; nothing was sent."""
    print(f"dry run: {total} dead-lettered record(s) to read, {summary.chosen} chosen, "
          f"{summary.not_chosen} not chosen; nothing sent, nothing committed")  # fmt: skip
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
    if not summary.chosen:
        return
    counts = [(topic, kind, str(n)) for (topic, kind), n in sorted(summary.per_type.items())]
    print_tables(
        table("chosen per error type", ("dead-letter topic", "error type", "records"), counts),
        table(f"first {len(summary.sample)} chosen",
              ("topic", "partition", "offset", "error type", "reason", "message", "key"),
              map(_sample_row, summary.sample)),
    )  # fmt: skip


def _sample_row(record: Record) -> tuple[str, ...]:
    key = bytes(record.key).decode("utf-8", "replace") if record.key is not None else ""
    reason = header(record, ERROR_REASON_HEADER) or ""
    message = (header(record, ERROR_MESSAGE_HEADER) or "")[:60]
    return (record.topic, str(record.partition), str(record.offset), error_type(record), reason, message, key)
