"""The latency phase against the floor loop in the report: its section and its targets."""

from __future__ import annotations

from tests.benchmarks.latency import Latency

P50_TARGET = 1.5
P99_TARGET = 2.0
"""The worker's publish → stored p50 and p99, at most these multiples of the floor loop's."""

Target = tuple[str, str, str]


def floor_targets(worker: Latency | None, floor: Latency | None) -> list[Target]:
    if worker is None or floor is None:
        return []
    rows = []
    for q, target in ((0.99, P99_TARGET), (0.5, P50_TARGET)):
        mine, floor_ms = worker.percentile(q), floor.percentile(q)
        rows.append((
            f"latency p{q * 100:.0f} publish → stored ≤ {target:g} x the floor loop's (same load)",
            f"{mine / floor_ms:.2f} x ({mine:,.0f} vs {floor_ms:,.0f} ms)",
            "yes" if mine <= target * floor_ms else "**no**",
        ))  # fmt: skip
    return rows


def floor_section(worker: Latency | None, floor: Latency | None) -> list[str]:
    if worker is None or floor is None:
        return []
    quantiles = (0.5, 0.9, 0.99)

    def row(name: str, latency: Latency) -> str:
        cells = " | ".join(f"{latency.percentile(q):,.0f} ms" for q in quantiles)
        return f"| {name} | {latency.count:,} | {cells} | {max(latency.latencies_ms):,.0f} ms |"

    ratios = " | ".join(f"{worker.percentile(q) / floor.percentile(q):.2f} x" for q in quantiles)
    lines = [
        "",
        "### Against the floor loop",
        "",
        "The floor loop is the simplest correct consumer (`tests/benchmarks/floor.py`): poll, one unordered "
        "insert_many per topic with duplicate keys ignored, a `floor_saved` line per partition, commit; "
        "the worker's consumer settings, its collections' indexes, and nothing else. It runs as its own "
        f"process under the same load right after the worker ({floor.rate:,.0f} events/s for "
        f"{floor.seconds:g} s, the same events), with topics, a group and a database of its own; a record "
        "is stored at the time of the `floor_saved` line covering it, as the worker's at its `*_saved` line.",
        "",
        "| consumer | events | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        row("worker", worker),
        row("floor loop", floor),
        f"| worker / floor loop | | {ratios} | {max(worker.latencies_ms) / max(floor.latencies_ms):.2f} x |",
    ]
    if shares := floor.cpu_by_window.get("floor"):
        lines += ["", "CPU share of the floor loop by 10 s of publishing: "
                  + ", ".join(f"{share:.2f}" for share in shares) + "."]  # fmt: skip
    return lines
