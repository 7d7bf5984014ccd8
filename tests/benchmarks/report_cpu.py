"""The worker's own CPU per event in the report: end to end, and each part measured alone."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

PART_LABELS = {
    "consume": "consume only (aiokafka reading the backlog: the consume ceiling phase)",
    "prepare": "decode + validate + document (`worker.pipeline.prepare`: the CPU path phase)",
    "write": "BSON encoding + the driver's send (the worker's writers via PyMongo, client side: "
    "the write path phase)",
}


def cpu_table(parts: Mapping[str, Sequence[float]], end_to_end: Sequence[float]) -> list[str]:
    """`parts` and `end_to_end`: µs per event of each repetition; medians and ranges."""
    if not end_to_end and not parts:
        return []
    lines = [
        "",
        "## CPU per event (µs, one core)",
        "",
        "User + system CPU of the process doing the work, from /proc/<pid>/stat, divided by the events "
        "handled; median and range over the repetitions. End to end: the worker process over its drain. "
        "Each part: this benchmark's process over that part alone (setup excluded). A busy machine "
        "stretches wall time far more than CPU time, but CPU time moves too (a busy sibling "
        "hyperthread, cold caches; in a VM that does not report steal time, time the host gives to "
        "others is counted as the process's own): compare these figures within one run.",
        "",
        "| what | µs per event (median) | range |",
        "|---|---:|---|",
    ]
    medians = {name: statistics.median(values) for name, values in parts.items() if values}
    lines += [
        f"| {PART_LABELS[name]} | {value:.1f} | {_range(parts[name])} |" for name, value in medians.items()
    ]
    complete = len(medians) == len(PART_LABELS)
    total = sum(medians.values())
    if complete:
        lines.append(f"| sum of the parts | {total:.1f} | |")
    if end_to_end:
        whole = statistics.median(end_to_end)
        lines.append(
            f"| worker end to end (its process during the drain) | {whole:.1f} | {_range(end_to_end)} |"
        )
        if complete:
            lines.append(
                f"| rest: end to end - sum of the parts (loop overhead, logging, commits) | {whole - total:.1f} "
                f"| {(whole - total) / whole:.0%} of end to end"
                + (
                    ": below zero, the parts alone cost more than in the worker (noise, see above) |"
                    if whole < total
                    else " |"
                )
            )
        lines += [
            "",
            f"One core carries about {1e6 / whole:,.0f} events/s once MongoDB is not the bottleneck "
            f"(1,000,000 / {whole:.1f} µs).",
        ]
    return lines


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "n/a (1 run)"
