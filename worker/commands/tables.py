"""Tables on stdout, the same for every command: as wide as the terminal, or 200 columns in a pipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 200
"""Off a terminal rich would wrap at 80 columns; logs and `| less` read better unwrapped."""


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
