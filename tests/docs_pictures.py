"""The pictures of docs/: a record's path, the redelivery loop, and partitions → replicas → group members.

`python -m tests.docs_pictures` redraws docs/*.png with matplotlib (Agg, the DejaVu Sans font
matplotlib ships, no metadata), so the same code draws the same pixels; tests/unit/test_docs.py
draws them again and compares.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DPI = 100

KAFKA = "#fde7c8"
WORKER = "#dbe9f6"
MONGO = "#d9f0d3"
DEAD = "#f6d5d5"
QUIET = "#eeeeee"
INK = "#222222"
RED = "#b03030"

ROUTES = ("validation", "results", "incidents", "telemetry")
COLLECTIONS = ("validation_audit", "workflow_results", "incidents", "telemetry_buffer")
EVENTS = ("plan validation (C1)", "workflow result (C5)", "incident (flow E)", "telemetry")


def canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure `width` by `height` inches whose data units are tenths of an inch."""
    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "docs"})
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width * 10)
    axes.set_ylim(0, height * 10)
    axes.axis("off")
    return figure, axes


def box(axes: Axes, x: float, y: float, w: float, h: float, text: str, colour: str, *,
        size: float = 9, bold: bool = False, edge: str = INK, align: str = "center") -> None:  # fmt: skip
    """A rounded box with its lower-left corner at (x, y) and `text` inside."""
    axes.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.8",
                                  facecolor=colour, edgecolor=edge, linewidth=1))  # fmt: skip
    left = align == "left"
    axes.text(x + (1.2 if left else w / 2), y + h / 2, text, ha="left" if left else "center", va="center",
              fontsize=size, fontweight="bold" if bold else "normal", color=INK)  # fmt: skip


def arrow(axes: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "", *,
          colour: str = INK, dashed: bool = False, bend: float = 0.0, where: float = 0.5,
          offset: tuple[float, float] = (0, 1.2)) -> None:  # fmt: skip
    """An arrow from `start` to `end`, its label near the point `where` of the way along."""
    axes.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=colour, linewidth=1.1,
                                   linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={bend}",
                                   shrinkA=1, shrinkB=1))  # fmt: skip
    if label:
        x = start[0] + (end[0] - start[0]) * where + offset[0]
        y = start[1] + (end[1] - start[1]) * where + offset[1]
        axes.text(x, y, label, ha="center", va="bottom", fontsize=7.5, color=colour)


def record_path() -> Figure:
    """Kafka topics → one group member per route → MongoDB collections or dead-letter topics; telemetry onward."""
    figure, axes = canvas(13, 8.6)
    axes.text(65, 82.5, "A record's path", ha="center", fontsize=13, fontweight="bold")
    axes.text(14, 69.5, "Kafka (input topics)", ha="center", fontweight="bold")
    axes.text(58, 69.5, "one replica: a group member per route", ha="center", fontweight="bold")
    axes.text(108, 69.5, "MongoDB (collections)", ha="center", fontweight="bold")
    arrow(axes, (52, 73.5), (20, 73.5), "commit last + 1 per partition, once every record before it is stored or dead-lettered",
          dashed=True, bend=0.2, offset=(0, 3.6))  # fmt: skip
    for row, (route, event, collection) in enumerate(zip(ROUTES, EVENTS, COLLECTIONS, strict=True)):
        y = 60 - row * 11
        box(axes, 1, y, 26, 8, f"orchestrator.{route}\n{event}", KAFKA)
        box(axes, 39, y, 38, 8, f"{route} member\npoll → decode → validate → bulk write", WORKER)
        box(axes, 95, y, 26, 8, collection, MONGO, bold=True)
        arrow(axes, (27, y + 4), (39, y + 4), "batch")
        arrow(axes, (77, y + 4), (95, y + 4), "stored once (_id)")
    box(axes, 34, 1, 48, 11, "<topic>.dlq  (original key, value, headers + x-error-*)\n"
        "validation · unprocessable · persist_refused\npersist_failed (MongoDB down, fail-open route)", DEAD)  # fmt: skip
    arrow(axes, (58, 27), (58, 12), "bad input, refused by MongoDB,\nor given up after the retries",
          colour=RED, offset=(11, -2))  # fmt: skip
    box(axes, 1, 4, 28, 15, "fail-closed route\n(FAIL_CLOSED_ROUTES):\nnothing dead-lettered;\npause, seek back,\n"
        "resume when MongoDB answers", QUIET, size=8)  # fmt: skip
    box(axes, 95, 13.5, 26, 8, "redelivery loop\nclaim → send → settle", WORKER)
    box(axes, 95, 1, 26, 8, "observability.telemetry", KAFKA)
    arrow(axes, (108, 27), (108, 21.5))
    arrow(axes, (108, 13.5), (108, 9), "acks=all", offset=(6, -1.5))
    return figure


def redelivery_loop() -> Figure:
    """A buffered telemetry document's states: pending, claimed, tombstone, rescheduled, parked."""
    figure, axes = canvas(12, 5.8)
    axes.text(60, 54, "The telemetry redelivery loop (one telemetry_buffer, any number of replicas)",
              ha="center", fontsize=12, fontweight="bold")  # fmt: skip
    box(axes, 2, 30, 26, 12, "pending\ndue_at set (sparse index)\nretry_count = attempts", MONGO)
    box(
        axes,
        44,
        30,
        30,
        12,
        "claimed by one batch\nlease_owner, lease_expires_at\n(3 round trips per batch)",
        WORKER,
    )
    box(axes, 90, 38, 28, 10, "delivered: tombstone\n{_id, state, delivered_at}", MONGO)
    box(axes, 90, 22, 28, 10, "purged after\nTELEMETRY_DEDUP_WINDOW_S", QUIET)
    box(axes, 44, 4, 30, 10, "parked (parked: true, last_error)\nthe loop no longer tries it", DEAD)
    arrow(axes, (28, 38), (44, 38), "claim: earliest due_at")
    arrow(axes, (74, 40), (90, 43), "acks=all", offset=(0, 0.5))
    arrow(axes, (104, 38), (104, 32), "every minute", offset=(7, -1))
    arrow(axes, (44, 32), (28, 32), "failed: next try after backoff", colour=RED, offset=(0, -4))
    arrow(
        axes, (59, 42), (15, 42), "lease lapsed (crash, no answer)", dashed=True, bend=0.35, offset=(0, 8.6)
    )
    arrow(axes, (59, 30), (59, 14), "TELEMETRY_MAX_DELIVERY_ATTEMPTS used up", colour=RED, offset=(14, 0))
    arrow(axes, (44, 9), (15, 30), "telemetry replay --parked-only", dashed=True, bend=-0.2, offset=(-19, -2))
    axes.text(104, 12, "a record read again inside\nthe window hits the tombstone's\n_id: not buffered twice",
              ha="center", va="center", fontsize=7.5)  # fmt: skip
    return figure


ASSIGNMENT = {"validation": 4, "results": 3, "incidents": 2, "telemetry": 8}
"""Partitions per topic in the scaling picture; four replicas."""
REPLICA_COLOURS = ("#8fb8de", "#a5d6a7", "#f4c27a", "#d7a9e3")


def scaling() -> Figure:
    """Four replicas, each with one group member per route; each topic's partitions shared among its members."""
    replicas = len(REPLICA_COLOURS)
    figure, axes = canvas(13, 6.7)
    axes.text(65, 63, "Partitions → replicas → group members (one consumer group, ROUTE_ISOLATION=true)",
              ha="center", fontsize=12, fontweight="bold")  # fmt: skip
    for column in range(replicas):
        x = 44 + column * 21
        box(axes, x, 6, 19, 51, "", "white", edge="#888888")
        axes.text(x + 9.5, 54, f"replica {column + 1} (pod)", ha="center", fontweight="bold")
    for row, (route, count) in enumerate(ASSIGNMENT.items()):
        y = 42 - row * 11
        axes.text(1, y + 8.3, f"orchestrator.{route}: {count} partitions", fontsize=8.5)
        owners = [
            partition * replicas // count if count >= replicas else partition for partition in range(count)
        ]
        for partition, owner in enumerate(owners):
            box(axes, 1 + partition * 4.2, y + 1, 3.8, 5.5, f"p{partition}", REPLICA_COLOURS[owner], size=7.5)
        for column in range(replicas):
            held = [f"p{p}" for p, owner in enumerate(owners) if owner == column]
            text = (
                f"{route} member\n{', '.join(held)}" if held else f"{route} member\nidle: no partition left"
            )
            box(
                axes, 45 + column * 21, y, 17, 8.5, text, REPLICA_COLOURS[column] if held else QUIET, size=7.5
            )
        arrow(axes, (35.5, y + 4), (44.5, y + 4))
    axes.text(1, 1, "A partition is read by one member at a time: route r works on min(replicas, partitions of r)\n"
              "replicas; KEDA adds replicas on lag, useful up to the largest topic's partition count.",
              fontsize=8.5, va="bottom")  # fmt: skip
    return figure


PICTURES: dict[str, Callable[[], Figure]] = {
    "how-it-works.png": record_path,
    "redelivery.png": redelivery_loop,
    "scaling.png": scaling,
}


def draw(name: str, directory: Path = DOCS) -> Path:
    """Draw one picture into `directory`; its path."""
    figure = PICTURES[name]()
    path = directory / name
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(figure)
    return path


def main() -> int:
    for name in PICTURES:
        print(f"wrote {draw(name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
