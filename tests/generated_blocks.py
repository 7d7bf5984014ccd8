"""A block of a doc that a test generates between two markers: rewritten when an environment
variable names the file, else compared with what is committed (docs/reliability.md's tables)."""

from __future__ import annotations

import os
from pathlib import Path


def with_block(text: str, block: str, *, start: str, end: str, heading: str) -> str:
    """`text` with the block between `start` and `end` replaced (or appended under `heading` when absent)."""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"


def write_when_asked(variable: str, block: str, *, start: str, end: str, heading: str) -> None:
    """Rewrite the block in the file the environment variable `variable` names, if it is set."""
    if target := os.environ.get(variable):
        path = Path(target)
        path.write_text(with_block(path.read_text(), block, start=start, end=end, heading=heading))
