"""A flame graph (SVG) of collapsed stacks: a box per frame, as wide as its samples, callers below.

Written here rather than with flamegraph.pl (not in any package this project installs): a static
SVG, each box's tooltip giving its samples; a frame's siblings sorted by name, so that two graphs
of the same code line up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from tests.benchmarks.profile import read_collapsed
from tests.benchmarks.stacks import COLOURS, colour, shares, work_frames, working

WIDTH = 1200
MARGIN = 10
FRAME_HEIGHT = 16
FONT_SIZE = 11
CHAR_WIDTH = 6.2
"""About the width of a character at FONT_SIZE in a sans-serif font."""
MIN_WIDTH = 0.4
"""Boxes narrower than this (pixels) are left out, and everything above them."""
HEADER = 56


@dataclass
class Frame:
    name: str
    samples: int = 0
    children: dict[str, Frame] = field(default_factory=dict)

    def depth(self) -> int:
        return 1 + max((child.depth() for child in self.children.values()), default=0)


def tree(stacks: Mapping[str, int]) -> Frame:
    """The frames of `stacks` (`a;b;c` root first -> samples) as a tree under a root of all samples."""
    root = Frame("all")
    for stack, samples in stacks.items():
        root.samples += samples
        node = root
        for name in stack.split(";"):
            node = node.children.setdefault(name, Frame(name))
            node.samples += samples
    return root


@dataclass(frozen=True)
class Box:
    """A frame placed: x and width in pixels, depth 0 the root; `path` its frames from the root's
    first child down to it."""

    frame: Frame
    x: float
    width: float
    depth: int
    path: tuple[str, ...]


def layout(root: Frame, width: float) -> list[Box]:
    """Every frame at least MIN_WIDTH wide, siblings left to right by name."""
    if not root.samples:
        return []
    scale = width / root.samples
    boxes: list[Box] = []

    def place(frame: Frame, x: float, depth: int, path: tuple[str, ...]) -> None:
        boxes.append(Box(frame, x, frame.samples * scale, depth, path))
        for name in sorted(frame.children):
            child = frame.children[name]
            if child.samples * scale >= MIN_WIDTH:
                place(child, x, depth + 1, (*path, name))
            x += child.samples * scale

    place(root, 0.0, 0, ())
    return boxes


def svg(
    stacks: Mapping[str, int], *, title: str, subtitle: str, colour: Callable[[tuple[str, ...]], str],
    legend: Sequence[tuple[str, str]] = (),
) -> str:  # fmt: skip
    """The flame graph; `colour(path)` fills each box (`path`: its frames, root first); `legend`:
    (colour, label) rows below it."""
    root = tree(stacks)
    boxes = layout(root, WIDTH - 2 * MARGIN)
    depth = max((box.depth for box in boxes), default=0) + 1
    graph_bottom = HEADER + depth * FRAME_HEIGHT
    height = graph_bottom + MARGIN + len(legend) * FRAME_HEIGHT + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="{FONT_SIZE}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="16">{escape(title)}</text>',
        f'<text x="{WIDTH / 2}" y="42" text-anchor="middle" fill="#555">{escape(subtitle)}</text>',
    ]
    for box in boxes:
        y = graph_bottom - (box.depth + 1) * FRAME_HEIGHT
        parts.append(_box(box, y, root.samples, "#e0e0e0" if box.depth == 0 else colour(box.path)))
    for row, (fill, label) in enumerate(legend):
        y = graph_bottom + MARGIN + row * FRAME_HEIGHT
        parts.append(
            f'<rect x="{MARGIN}" y="{y}" width="24" height="{FRAME_HEIGHT - 3}" fill="{fill}"/>'
            f'<text x="{MARGIN + 32}" y="{y + FRAME_HEIGHT - 5}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _box(box: Box, y: float, total: int, fill: str) -> str:
    x = MARGIN + box.x
    tooltip = f"{box.frame.name}: {box.frame.samples:,} samples ({box.frame.samples / total:.2%})"
    label = _fit(box.frame.name, box.width)
    text = f'<text x="{x + 3:.1f}" y="{y + FRAME_HEIGHT - 4.5:.1f}">{escape(label)}</text>' if label else ""
    return (
        f"<g><title>{escape(tooltip)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.width:.1f}" height="{FRAME_HEIGHT - 1}" '
        f'fill="{fill}" rx="2"/>{text}</g>'
    )


def _fit(name: str, width: float) -> str:
    """As much of `name` as fits in `width` pixels ("" below three characters' room)."""
    room = int((width - 6) / CHAR_WIDTH)
    if room < 3:
        return ""
    return name if len(name) <= room else name[: room - 2] + ".."


def worker_svg(stacks: Mapping[str, int], *, title: str) -> str:
    """The worker's flame graph: its stacks from the event loop's hand-over up, coloured by category
    (tests.benchmarks.stacks), the categories' shares in the legend."""
    work: dict[str, int] = {}
    for stack, samples in working(stacks).items():
        frames = ";".join(work_frames(stack))
        work[frames] = work.get(frames, 0) + samples
    legend = [(COLOURS[name], f"{share:5.1%}  {name}") for name, share in shares(stacks).items()]
    waits = sum(stacks.values()) - sum(work.values())
    subtitle = (
        f"{sum(work.values()):,} samples ({waits:,} stopped in select, waits for a core, left out); each "
        "stack from the frame the event loop runs; colour: the category its samples count in"
    )
    return svg(work, title=title, subtitle=subtitle, colour=colour, legend=legend)


def write_worker_flamegraph(stacks: Mapping[str, int], directory: Path, *, title: str) -> Path:
    """`worker-drain.svg` and its stacks (`worker-drain.collapsed.txt`, py-spy's raw format) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = sorted(f"{stack} {samples}" for stack, samples in stacks.items())
    (directory / "worker-drain.collapsed.txt").write_text("\n".join(lines) + "\n")
    path = directory / "worker-drain.svg"
    path.write_text(worker_svg(stacks, title=title))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.benchmarks.flamegraph STACKS SVG [--title T]`: draw collapsed stacks again."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.flamegraph", description=main.__doc__)
    parser.add_argument("stacks", type=Path, help="py-spy's raw output (collapsed stacks)")
    parser.add_argument("svg", type=Path, help="the flame graph to write")
    parser.add_argument("--title", default="The worker draining a backlog", help="the graph's title")
    args = parser.parse_args(argv)
    args.svg.write_text(worker_svg(read_collapsed(args.stacks.read_text()), title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
