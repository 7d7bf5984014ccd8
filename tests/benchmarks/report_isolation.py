"""The isolation phase in the report: its targets, its section and its chart panel."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes

from tests.benchmarks.isolation import IsolationRun
from tests.benchmarks.measure import percentile

INCIDENT_P99_TARGET_MS = 250.0
DRAIN_RATIO_TARGET = 0.9
DURING_OVER_IDLE_TARGET = 2.0
"""Incidents' p99 while the backlog drains, at most this multiple of their p99 once it is drained."""


@dataclass(frozen=True)
class Mode:
    """The runs of one ROUTE_ISOLATION value: latencies pooled, drain rates' median."""

    isolation: bool
    during_ms: list[float]
    idle_ms: list[float]
    drain_rates: list[float]

    @property
    def drain_rate(self) -> float:
        return statistics.median(self.drain_rates)

    @property
    def label(self) -> str:
        return f"ROUTE_ISOLATION={str(self.isolation).lower()}"


def mode(runs: Sequence[IsolationRun], isolation: bool) -> Mode | None:
    mine = [run for run in runs if run.isolation is isolation]
    if not mine:
        return None
    return Mode(
        isolation,
        [ms for run in mine for ms in run.during_ms],
        [ms for run in mine for ms in run.idle_ms],
        [run.drain_rate for run in mine],
    )


def _p(values: list[float], q: float) -> str:
    return f"{percentile(values, q):,.0f} ms" if values else "n/a"


def _max(values: list[float]) -> str:
    return f"{max(values):,.0f} ms" if values else "n/a"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def isolation_targets(runs: Sequence[IsolationRun]) -> list[tuple[str, str, str]]:
    """Rows of the targets table: (target, measured, met?)."""
    on, off = mode(runs, True), mode(runs, False)
    rows = []
    if on is not None and on.during_ms:
        p99 = percentile(on.during_ms, 0.99)
        rows.append((
            "incidents p99 publish → stored while a telemetry backlog drains (ROUTE_ISOLATION=true) "
            f"≤ {INCIDENT_P99_TARGET_MS:.0f} ms",
            f"{p99:,.0f} ms ({len(on.during_ms)} incidents)",
            _yes(p99 <= INCIDENT_P99_TARGET_MS),
        ))  # fmt: skip
    if on is not None and on.during_ms and on.idle_ms:
        during, idle = percentile(on.during_ms, 0.99), percentile(on.idle_ms, 0.99)
        rows.append((
            "incidents p99 publish → stored while a telemetry backlog drains ≤ "
            f"{DURING_OVER_IDLE_TARGET:g} x their idle p99 in the same runs (ROUTE_ISOLATION=true)",
            f"{during / idle:.2f} x ({during:,.0f} vs {idle:,.0f} ms)",
            _yes(during <= DURING_OVER_IDLE_TARGET * idle),
        ))  # fmt: skip
    if on is not None and off is not None:
        ratio = on.drain_rate / off.drain_rate
        rows.append((
            f"telemetry drain rate with isolation ≥ {DRAIN_RATIO_TARGET} x without",
            f"{ratio:.2f} x ({on.drain_rate:,.0f} vs {off.drain_rate:,.0f} events/s)",
            _yes(ratio >= DRAIN_RATIO_TARGET),
        ))  # fmt: skip
    return rows


def isolation_section(runs: Sequence[IsolationRun], events: int, rate: float, idle: int) -> list[str]:
    modes = [m for m in (mode(runs, True), mode(runs, False)) if m is not None]
    if not modes:
        return []
    pairs = max(len(m.drain_rates) for m in modes)
    lines = [
        "",
        "## Route isolation (incidents while a telemetry backlog drains)",
        "",
        f"A backlog of {events:,} telemetry events (one route), then a worker started on it while "
        f"incidents are published at {rate:g}/s through the whole drain, then {idle} more once it is "
        f"drained (idle). Run with ROUTE_ISOLATION=true and =false, {pairs} time(s) each (the order "
        "alternating); latencies pooled over the runs, drain rate the median.",
        "",
        "| ROUTE_ISOLATION | telemetry drain, events/s | incidents during the drain: n, p50 / p99 / max "
        "| idle: n, p50 / p99 / max |",
        "|---|---:|---|---|",
    ]
    for m in modes:
        lines.append(
            f"| {str(m.isolation).lower()} | {m.drain_rate:,.0f} ({_range(m.drain_rates)}) "
            f"| {len(m.during_ms)}: {_p(m.during_ms, 0.5)} / {_p(m.during_ms, 0.99)} / {_max(m.during_ms)} "
            f"| {len(m.idle_ms)}: {_p(m.idle_ms, 0.5)} / {_p(m.idle_ms, 0.99)} / {_max(m.idle_ms)} |"
        )
    lines.append("")
    for m in modes:
        if m.during_ms and m.idle_ms:
            lines.append(
                f"{m.label}: incidents' p99 during the drain / idle {during_over_idle(m.during_ms, m.idle_ms)}"
                " (pooled); by run: "
                + ", ".join(during_over_idle(run.during_ms, run.idle_ms) for run in runs
                            if run.isolation is m.isolation and run.during_ms and run.idle_ms) + "."
            )  # fmt: skip
    if len(modes) == 2:
        on, off = modes
        lines.append(f"Drain rate with isolation / without: {on.drain_rate / off.drain_rate:.2f} x.")
    return lines


def during_over_idle(during_ms: list[float], idle_ms: list[float]) -> str:
    """`r x (during / idle ms)`: incidents' p99 while the backlog drains over their idle p99."""
    during, idle = percentile(during_ms, 0.99), percentile(idle_ms, 0.99)
    return f"{during / idle:.2f} x ({during:,.0f} / {idle:,.0f} ms)"


def _range(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "1 run"


def isolation_panel(ax: Axes, runs: Sequence[IsolationRun]) -> None:
    """Incident latencies per mode, during the drain and idle, as box plots (whiskers min-max)."""
    data, labels = [], []
    for m in (mode(runs, True), mode(runs, False)):
        if m is None:
            continue
        short = "on" if m.isolation else "off"
        for name, values in (("drain", m.during_ms), ("idle", m.idle_ms)):
            if values:
                data.append(values)
                labels.append(f"{short}, {name}" + (f"\n{m.drain_rate:,.0f} ev/s" if name == "drain" else ""))
    if not data:
        return
    ax.boxplot(data, whis=(0, 100))
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_yscale("log")
    ax.axhline(INCIDENT_P99_TARGET_MS, linestyle=":", color="grey")
    ax.text(0.55, INCIDENT_P99_TARGET_MS, f" p99 target {INCIDENT_P99_TARGET_MS:.0f} ms", fontsize=8)
    ax.set_ylabel("incident publish → stored, ms (log)")
    ax.set_title("Incidents while telemetry drains (ROUTE_ISOLATION)")
