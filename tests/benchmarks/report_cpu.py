"""The worker's own CPU per event in the report: end to end, each part measured alone, and the
profiled drain's samples by category (the breakdown); their targets."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.benchmarks.profile import WorkerProfile
from tests.benchmarks.stacks import UNATTRIBUTED, categorise, counts, waiting

PART_LABELS = {
    "consume": "consume only (aiokafka reading the backlog: the consume ceiling phase)",
    "prepare": "decode + validate + document (`worker.pipeline.prepare`: the CPU path phase)",
    "contract": "of which the contract's libraries alone: orjson.loads + the route's pydantic model "
    "(the contract phase; part of prepare, not added again)",
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
    complete = all(name in medians for name in SUMMED)
    total = sum(medians[name] for name in SUMMED if name in medians)
    if complete:
        lines.append(f"| sum of the parts | {total:.1f} | |")
    if end_to_end:
        whole = statistics.median(end_to_end)
        lines.append(
            f"| worker end to end (its process during the drain) | {whole:.1f} | {_range(end_to_end)} |"
        )
        if complete:
            lines.append(
                f"| rest: end to end - sum of the parts measured alone (loop overhead, logging, commits: the "
                "py-spy breakdown below puts all of end to end in categories) "
                f"| {whole - total:.1f} "
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
    if (floor := libraries_floor(medians)) is not None:
        lines += ["", floor]
    return lines


SUMMED = ("consume", "prepare", "write")
"""The parts that add up to the worker's work (the contract phase is inside prepare)."""


def libraries_floor(medians: Mapping[str, float]) -> str | None:
    """What the libraries alone cost per event, as a multiple of consume only: aiokafka reading,
    orjson + pydantic validating, PyMongo writing, each measured alone in this run."""
    if not all(name in medians for name in ("consume", "contract", "write")):
        return None
    consume, contract, write = medians["consume"], medians["contract"], medians["write"]
    floor = consume + contract + write
    return (
        f"The libraries alone, each measured alone in this run, cost {floor:.1f} µs per event "
        f"({consume:.1f} consume + {contract:.1f} contract + {write:.1f} write path) = "
        f"{floor / consume:.1f} x consume only: the floor under the worker's end-to-end figure with "
        "these libraries, before any code of the worker's own."
    )


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "n/a (1 run)"


CPU_TARGET_US = 30.0
CONSUME_MULTIPLE_TARGET = 6.0
UNATTRIBUTED_TARGET = 0.10
"""At most this share of the worker's CPU left out of the breakdown's categories."""

Target = tuple[str, str, str]


def cpu_targets(consume: Sequence[float], end_to_end: Sequence[float]) -> list[Target]:
    """The worker's CPU per event end to end, alone and against aiokafka's alone (median µs)."""
    if not end_to_end:
        return []
    whole = statistics.median(end_to_end)
    rows = [(f"worker CPU per event end to end ≤ {CPU_TARGET_US:g} µs", f"{whole:.1f} µs",
             _yes(whole <= CPU_TARGET_US))]  # fmt: skip
    if consume:
        alone = statistics.median(consume)
        rows.append((
            f"worker CPU per event end to end ≤ {CONSUME_MULTIPLE_TARGET:g} x consume only (aiokafka alone)",
            f"{whole / alone:.1f} x ({whole:.1f} vs {alone:.1f} µs)",
            _yes(whole <= CONSUME_MULTIPLE_TARGET * alone),
        ))  # fmt: skip
    return rows


@dataclass(frozen=True)
class Breakdown:
    """The profiled drain's samples per category, scaled to the worker's CPU per event end to end."""

    samples: dict[str, int]
    """Per category, in CATEGORY_NAMES order."""
    end_to_end_us: float

    waits: int
    """Samples left out: stopped in the selector's `select` (stacks.waiting)."""

    @classmethod
    def of(cls, stacks: Mapping[str, int], end_to_end_us: float) -> Breakdown:
        waits = sum(count for stack, count in stacks.items() if waiting(stack))
        return cls(counts(stacks), end_to_end_us, waits)

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def share(self, category: str) -> float:
        return self.samples[category] / self.total

    def us(self, category: str) -> float:
        return self.end_to_end_us * self.share(category)

    @property
    def unattributed(self) -> float:
        return self.share(UNATTRIBUTED)

    def target(self) -> Target:
        return (
            f"the parts add up: worker CPU left out of the breakdown's categories < "
            f"{UNATTRIBUTED_TARGET:.0%} of end to end",
            f"{self.unattributed:.1%} ({self.us(UNATTRIBUTED):.1f} of {self.end_to_end_us:.1f} µs)",
            _yes(self.unattributed < UNATTRIBUTED_TARGET),
        )


def breakdown_section(profile: WorkerProfile, breakdown: Breakdown, *, timed: bool) -> list[str]:
    """The CPU breakdown by category; `timed`: end to end is the timed drains' median (else the
    profiled drain's own)."""
    drained = profile.drained
    source = (
        "the timed drains' median" if timed else "the profiled drain's own, slowed a little by the sampling"
    )
    lines = [
        "",
        "## Where the worker's CPU goes (py-spy)",
        "",
        f"One more drain of the same backlog after the timed ones ({drained.events:,} events, a group "
        "and a database of its own; not timed), with py-spy sampling the worker process at "
        f"{profile.rate_hz} Hz from its partitions' assignment to the last commit (`--nonblocking`: the "
        f"worker is never paused; idle threads are left out): {profile.samples:,} samples, i.e. "
        f"{profile.sampled_seconds:,.1f} s found running, against {profile.cpu_seconds:,.1f} s of CPU "
        "read from /proc meanwhile: py-spy counts a thread that waits for a core as running, and the "
        "machine is shared. A wait after a preemption keeps the stack of the work it interrupted, which "
        "keeps the shares; a wait after epoll returns shows as a sample stopped in the selector's "
        f"`select`: those ({breakdown.waits:,}) are left out. "
        "Each other sample's stack, read from the frame the event loop runs, goes to the first category that "
        "names one of its frames, with everything it calls (`tests/benchmarks/stacks.py`); µs per event = "
        f"the worker's CPU per event end to end ({breakdown.end_to_end_us:.1f} µs, {source}) x the "
        "category's share of the samples. Flame graph, coloured by these categories: "
        "[flamegraphs/worker-drain.svg](flamegraphs/worker-drain.svg) (its stacks in "
        "`flamegraphs/worker-drain.collapsed.txt`); before the hot-path work of issue 23: "
        "[flamegraphs/before.svg](flamegraphs/before.svg).",
        "",
        "| category | samples | share | µs per event |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {count:,} | {breakdown.share(name):.1%} | {breakdown.us(name):.1f} |"
          for name, count in breakdown.samples.items()),
        f"| end to end | {breakdown.total:,} | 100.0% | {breakdown.end_to_end_us:.1f} |",
        "",
        f"Left out of the categories: {breakdown.unattributed:.1%} of end to end "
        f"({breakdown.us(UNATTRIBUTED):.1f} µs per event); under {UNATTRIBUTED_TARGET:.0%}: "
        f"{_yes(breakdown.unattributed < UNATTRIBUTED_TARGET)}.",
    ]  # fmt: skip
    if frames := unattributed_frames(profile.stacks):
        lines.append("Its most sampled frames: " + "; ".join(f"`{f}` ({n:,})" for f, n in frames) + ".")
    return lines


def unattributed_frames(stacks: Mapping[str, int], top: int = 5) -> list[tuple[str, int]]:
    """The innermost frames of the unattributed stacks, most sampled first."""
    counts: dict[str, int] = {}
    for stack, count in stacks.items():
        if categorise(stack) == UNATTRIBUTED:
            frame = stack.rpartition(";")[2]
            counts[frame] = counts.get(frame, 0) + count
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"
