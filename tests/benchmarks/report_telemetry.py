"""The telemetry phase in the report: its targets, its section and its chart panel."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.axes import Axes

from tests.benchmarks.telemetry import BufferDrain, TelemetryRun

DRAIN_OVER_INGEST_TARGET = 1.0
LAST_OVER_FIRST_TENTH_TARGET = 0.8
TWO_OVER_ONE_LOOP_TARGET = 1.5
SATURATED = 0.9
"""A process at this share of a core (or all together at this share of every core) is saturated: the
Python processes and nx-27017 each compute on one core at a time."""
BUSY = 0.5
"""A drain's batches go through the processes one after the other: one busy over half the drain's time
is where most of it went."""
TENTHS = [f"{100 - 10 * tenth} % → {90 - 10 * tenth} %" for tenth in range(10)]


def bottleneck(shares: Mapping[str, float], cores: int) -> str:
    """Which process (or the machine) held a run back, from each process's CPU share over it."""
    busiest, share = max(shares.items(), key=lambda item: item[1])
    total = sum(shares.values())
    if total >= SATURATED * cores:
        return (
            f"the machine: its {cores} cores {total / cores:.0%} busy (the busiest, {busiest}, {share:.2f})"
        )
    if share >= BUSY:
        return f"{busiest} ({share:.2f} of a core{', saturated' if share >= SATURATED else ''})"
    return (
        f"none: the busiest, {busiest}, {share:.2f} of a core; the time goes to waits between the processes"
    )


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def first_and_last(drain: BufferDrain) -> tuple[float, float]:
    tenths = drain.tenths()
    return tenths[0], tenths[-1]


def telemetry_targets(run: TelemetryRun | None, cores: int) -> list[tuple[str, str, str]]:
    """Rows of the targets table: (target, measured, met?)."""
    if run is None:
        return []
    rows = []
    one, two = run.drain(1), run.drain(2)
    if one is not None:
        ratio = one.rate / run.ingest.rate
        rows.append((
            f"telemetry drain, one `redeliver` at its defaults ≥ {DRAIN_OVER_INGEST_TARGET:g} x the telemetry "
            "ingest rate of the same run",
            f"{ratio:.2f} x ({one.rate:,.0f} vs {run.ingest.rate:,.0f} documents/s)",
            _yes(ratio >= DRAIN_OVER_INGEST_TARGET),
        ))  # fmt: skip
        first, last = first_and_last(one)
        rows.append((
            f"last tenth of the {one.pending:,}-document drain ({one.tombstones:,} tombstones at the start) "
            f"≥ {LAST_OVER_FIRST_TENTH_TARGET:g} x the first tenth",
            f"{last / first:.2f} x ({last:,.0f} vs {first:,.0f} documents/s)",
            _yes(last >= LAST_OVER_FIRST_TENTH_TARGET * first),
        ))  # fmt: skip
    if one is not None and two is not None:
        ratio = two.rate / one.rate
        rows.append((
            f"two loops ≥ {TWO_OVER_ONE_LOOP_TARGET:g} x one loop, where the servers are not the bottleneck",
            f"{ratio:.2f} x ({two.rate:,.0f} vs {one.rate:,.0f} documents/s)",
            f"{_yes(ratio >= TWO_OVER_ONE_LOOP_TARGET)}; bottleneck with two loops: "
            f"{bottleneck(two.cpu_share, cores)}",
        ))  # fmt: skip
    return rows


def telemetry_section(run: TelemetryRun | None, cores: int) -> list[str]:
    if run is None:
        return []
    ingest, drains = run.ingest, run.drains
    lines = [
        "",
        "## Telemetry delivery",
        "",
        f"Ingest: the worker (`python -m worker run`, REDELIVERY_ENABLED=false) buffering a backlog of "
        f"telemetry events: {ingest.events:,} documents buffered after its first write, in the "
        f"{ingest.seconds:,.1f} s from its first to its last write: **{ingest.rate:,.0f} documents/s**.",
    ]
    if not drains:
        return lines
    lines += [
        "",
        f"Drains: `python -m worker redeliver` at its defaults (REDELIVERY_BATCH_SIZE {drains[0].batch_size}) on a "
        f"telemetry_buffer seeded with {drains[0].pending:,} pending documents and "
        f"{drains[0].tombstones:,} tombstones; one process, then two on the same seed.",
        "",
        "| loops | documents | seconds | documents/s | / ingest | last tenth / first |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {d.loops} | {d.pending:,} | {d.seconds:,.1f} | {d.rate:,.0f} | {d.rate / ingest.rate:.2f} x "
          f"| {_tenth_ratio(d)} |" for d in drains),
    ]  # fmt: skip
    if len(drains) == 2:
        lines += ["", f"Two loops / one loop: {drains[1].rate / drains[0].rate:.2f} x."]
    lines += ["", "By tenth of the pending documents, documents/s:", ""]
    lines += [
        "| pending | " + " | ".join(f"{d.loops} loop{'s' if d.loops > 1 else ''}" for d in drains) + " |",
        "|---|" + "---:|" * len(drains),
        *(f"| {label} | " + " | ".join(f"{d.tenths()[i]:,.0f}" for d in drains) + " |"
          for i, label in enumerate(TENTHS)),
    ]  # fmt: skip
    return lines + _cpu_lines(run, cores) + _count_line(drains)


def _tenth_ratio(drain: BufferDrain) -> str:
    first, last = first_and_last(drain)
    return f"{last / first:.2f} x"


def _cpu_lines(run: TelemetryRun, cores: int) -> list[str]:
    columns = [("ingest", run.ingest.cpu_share)]
    columns += [(f"{d.loops} loop{'s' if d.loops > 1 else ''}", d.cpu_share) for d in run.drains]
    names = list(dict.fromkeys(name for _, shares in columns for name in shares))
    lines = [
        "",
        f"CPU share of each process (1.0 = one core busy the whole time; the machine has {cores}; "
        "`benchmark` is this program reading the loops' logs):",
        "",
        "| process | " + " | ".join(label for label, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(f"| {name} | " + " | ".join(f"{shares[name]:.2f}" if name in shares else "" for _, shares in columns)
          + " |" for name in names),
        "",
        f"Bottleneck (the process busy over {BUSY:g} of a core, saturated from {SATURATED:g}; or every core "
        "busy):",
        "",
    ]  # fmt: skip
    return lines + [f"- {label}: {bottleneck(shares, cores)}." for label, shares in columns]


def _count_line(drains: list[BufferDrain]) -> list[str]:
    timed = [d for d in drains if d.count_s is not None]
    if not timed:
        return []
    d = timed[0]
    return [
        "",
        f"One count of the pending documents (`{{due_at: {{$exists: true}}}}`) took {d.count_s:,.1f} s "
        f"on the seeded buffer ({d.pending + d.tombstones:,} documents): the drains' progress is read from "
        "the loops' `telemetry_redelivered` lines instead, since a count every half second would hold the "
        "server most of the time. For the same reason HTTP (and with it the telemetry_buffer gauges, "
        "sampled every 15 s by default) is off here, as in every phase.",
    ]


def telemetry_panel(ax: Axes, run: TelemetryRun) -> None:
    """Pending documents over time, one line per drain."""
    for d, color in zip(run.drains, ("#c44e52", "#4c72b0"), strict=False):
        ax.plot([p[0] for p in d.points], [p[1] for p in d.points], color=color,
                label=f"{d.loops} loop{'s' if d.loops > 1 else ''}: {d.rate:,.0f} documents/s")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("seconds since the first loop started")
    ax.set_ylabel("documents pending")
    ax.set_title(f"Telemetry drain (ingest {run.ingest.rate:,.0f} documents/s)")
