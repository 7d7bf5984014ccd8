"""Specification of the benchmark's targets table and its floor loop: ratios against the floor loop,
the ceilings and the naive baseline, incidents during a drain against idle ones, a quick run's warning,
and the floor loop's documents, writes and log lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo.errors import BulkWriteError

from tests.benchmarks.floor import document, insert
from tests.benchmarks.isolation import IsolationRun
from tests.benchmarks.latency import Latency
from tests.benchmarks.measure import steady_span
from tests.benchmarks.report import CONSUME, NAIVE, WORKER, WRITE, Results, markdown, summary_lines
from tests.benchmarks.report_isolation import isolation_section, isolation_targets
from tests.benchmarks.report_latency import floor_section, floor_targets
from tests.benchmarks.worker_run import (
    SAVED_EVENTS,
    all_assigned_at,
    drain_figures,
    saved_writes,
    stored_times,
)


def latency(ms: list[float], name: str = "worker") -> Latency:
    return Latency(rate=100.0, seconds=10.0, count=len(ms), latencies_ms=ms, routes=["incidents"] * len(ms),
                   published_s=[float(i) for i in range(len(ms))], cpu_by_window={name: [0.25]})  # fmt: skip


def test_latency_targets_are_twice_the_floor_s_p99_and_one_and_a_half_its_p50() -> None:
    """p99 200 vs 100 ms is 2.00 x: met; p50 160 vs 100 ms is 1.60 x: missed."""
    worker = latency([160.0] * 51 + [200.0] * 49)
    floor = latency([100.0] * 100, "floor")
    p99, p50 = floor_targets(worker, floor)
    assert p99 == ("latency p99 publish → stored ≤ 2 x the floor loop's (same load)",
                   "2.00 x (200 vs 100 ms)", "yes")  # fmt: skip
    assert p50[1:] == ("1.60 x (160 vs 100 ms)", "**no**")
    assert floor_targets(worker, None) == []


def test_the_floor_section_sets_both_consumers_side_by_side_with_their_ratios() -> None:
    """A row per consumer (events, p50, p90, p99, max), the ratios, and the floor loop's CPU share."""
    text = "\n".join(floor_section(latency([10.0, 20.0, 40.0]), latency([5.0, 10.0, 10.0], "floor")))
    assert "| worker | 3 | 20 ms | 40 ms | 40 ms | 40 ms |" in text
    assert "| floor loop | 3 | 10 ms | 10 ms | 10 ms | 10 ms |" in text
    assert "| worker / floor loop | | 2.00 x | 4.00 x | 4.00 x | 4.00 x |" in text
    assert "CPU share of the floor loop by 10 s of publishing: 0.25." in text


def run(isolation: bool, during: list[float], idle: list[float]) -> IsolationRun:
    return IsolationRun(isolation, drained=1000, drain_seconds=1.0, during_ms=during, idle_ms=idle)


def test_the_isolation_ratio_is_the_pooled_p99_during_the_drain_over_the_idle_p99() -> None:
    """ROUTE_ISOLATION=true runs pooled: p99 90 ms during, 50 idle, 1.80 x: met; without idle ones, no row."""
    runs = [
        run(True, [10.0] * 98 + [90.0] * 2, [50.0]),
        run(True, [20.0] * 100, [40.0]),
        run(False, [9e3], [9.0]),
    ]
    absolute = next(row for target, *row in isolation_targets(runs) if target.endswith("≤ 250 ms"))
    assert absolute[0] == "90 ms (200 incidents)"
    ratio = next(row for target, *row in isolation_targets(runs) if "idle p99" in target)
    assert ratio == ["1.80 x (90 vs 50 ms)", "yes"]
    over = next(
        row for target, *row in isolation_targets([run(True, [101.0], [50.0])]) if "idle p99" in target
    )
    assert over == ["2.02 x (101 vs 50 ms)", "**no**"]
    assert not any("idle p99" in target for target, _, _ in isolation_targets([run(True, [10.0], [])]))


def test_the_isolation_section_gives_the_ratio_pooled_and_run_by_run() -> None:
    """Each mode: pooled ratio, then each run's own."""
    text = "\n".join(isolation_section([run(True, [30.0], [10.0]), run(True, [20.0], [20.0])], 100, 2, 1))
    assert ("ROUTE_ISOLATION=true: incidents' p99 during the drain / idle 1.50 x (30 / 20 ms) (pooled); "
            "by run: 3.00 x (30 / 10 ms), 1.00 x (20 / 20 ms).") in text  # fmt: skip


def results(**rates: list[float]) -> Results:
    made = Results(facts={"CPU": "2 x test"}, events=1000, naive_events=10)
    made.rates = {{"consume": CONSUME, "write": WRITE, "worker": WORKER, "naive": NAIVE}[k]: v
                  for k, v in rates.items()}  # fmt: skip
    return made


def test_throughput_targets_are_nine_tenths_of_the_lower_ceiling_and_twelve_times_naive() -> None:
    """900 of min(5,000, 1,000) is 0.90 x: met; 900 vs naive 80 is 11.2 x: missed."""
    text = markdown(results(consume=[5000.0], write=[1000.0], worker=[900.0], naive=[80.0]), "c.png")
    assert (
        "| worker throughput ≥ 0.9 x min(consume, write ceiling) | 0.90 x (900 vs 1,000 events/s) | yes |"
        in text
    )
    assert "| worker throughput ≥ 12 x naive | 11.2 x (900 vs 80 events/s) | **no** |" in text


def test_a_quick_run_says_its_ratios_are_not_the_targets() -> None:
    """The report and the console both warn and judge no target; a full run does."""
    quick = results(consume=[5000.0], write=[10000.0], worker=[900.0])
    quick.quick = True
    text = markdown(quick, "c.png")
    assert "**A quick run (`--quick`)**" in text
    assert "| 0.18 x (900 vs 5,000 events/s) | not judged: quick run |" in text
    assert summary_lines(quick)[0].startswith("quick run: these ratios are not the targets'")
    assert summary_lines(quick)[1].endswith("(not judged: quick run)")
    full = results(consume=[5000.0], write=[10000.0], worker=[900.0])
    assert "quick run" not in markdown(full, "c.png").lower()
    assert "| 0.18 x (900 vs 5,000 events/s) | **no** |" in markdown(full, "c.png")
    assert not summary_lines(full)[0].startswith("quick run")


def test_the_floor_loop_keys_a_document_by_its_event_id_else_by_its_bytes() -> None:
    """`_id` is the event's `event_id`; without one, the same bytes give the same `_id` (so a re-read is a duplicate)."""
    assert document(b'{"event_id": "inc-1", "severity": "high"}') == {
        "_id": "inc-1", "event_id": "inc-1", "severity": "high"
    }  # fmt: skip
    anonymous = document(b'{"severity": "low"}')
    assert (
        anonymous["_id"]
        == document(b'{"severity": "low"}')["_id"]
        != document(b'{"severity": "high"}')["_id"]
    )
    assert len(anonymous["_id"]) == 64


class Collection:
    """insert_many that records its calls and raises the given bulk write error."""

    def __init__(self, details: dict[str, Any] | None = None) -> None:
        self.details = details
        self.calls: list[tuple[list[Any], bool]] = []

    async def insert_many(self, documents: list[Any], *, ordered: bool) -> None:
        self.calls.append((documents, ordered))
        if self.details is not None:
            raise BulkWriteError(self.details)


async def test_the_floor_loop_inserts_unordered_and_forgives_only_duplicate_keys() -> None:
    """11000 on every refused document passes; any other code, or a write concern error, raises."""
    duplicates = Collection({"writeErrors": [{"code": 11000}, {"code": 11000}], "writeConcernErrors": []})
    await insert(duplicates, [{"_id": 1}])  # type: ignore[arg-type]
    assert duplicates.calls == [([{"_id": 1}], False)]
    with pytest.raises(BulkWriteError):
        await insert(Collection({"writeErrors": [{"code": 11000}, {"code": 121}]}), [{}])  # type: ignore[arg-type]
    with pytest.raises(BulkWriteError):
        await insert(Collection({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), [{}])  # type: ignore[arg-type]


def test_saved_lines_of_the_worker_and_the_floor_loop_are_read_alike(tmp_path: Path) -> None:
    """`floor_saved` counts as a saved line: records per line, the first line's presence, stored times."""
    log = tmp_path / "floor.log"
    lines: list[dict[str, Any]] = [
        {"event": "partitions_assigned", "partitions": ["t:0"], "timestamp": "2026-12-08T00:00:00+00:00"},
        {"event": "floor_saved", "topic": "t", "partition": 0, "offset": 0, "last_offset": 9,
         "timestamp": "2026-12-08T00:00:01+00:00"},
        {"event": "incident_saved", "topic": "u", "partition": 1, "offset": 5, "last_offset": 6,
         "timestamp": "2026-12-08T00:00:02.500000Z"},
    ]  # fmt: skip
    log.write_bytes(b"not json\n" + b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert "floor_saved" in SAVED_EVENTS
    start = 1796688000.0  # 2026-12-08T00:00:00Z
    assert saved_writes(log) == [(start + 1, 10, "t"), (start + 2.5, 2, "u")]
    stored = stored_times(log)
    assert stored[("t", 0, 9)] == start + 1 and stored[("u", 1, 6)] == start + 2.5
    assert len(stored) == 12


def test_a_drain_is_timed_once_every_route_has_written_once() -> None:
    """Route a writes at 10 s, b's first write (two lines within 5 ms) at 11 s: from 11 s, a's 300 and b's 250 after it."""
    lines = [(10.0, 1000, "a"), (11.003, 400, "b"), (11.0, 600, "b"), (11.5, 300, "a"), (13.0, 250, "b")]
    assert steady_span(lines) == (550, 2.0)


def test_a_drain_with_nothing_after_every_route_s_first_write_has_no_span() -> None:
    """Nothing after the last route's first write: no rate (rather than a division by zero)."""
    with pytest.raises(ValueError):
        steady_span([(10.0, 500, "a"), (11.0, 500, "b"), (11.001, 500, "b")])
    with pytest.raises(ValueError):
        steady_span([])


def test_a_drain_counts_from_the_assignment_that_completes_every_route() -> None:
    """Assigned a, then b, then a again: complete at the second line's time; None while a topic lacks one."""
    lines: list[dict[str, Any]] = [
        {
            "event": "partitions_assigned",
            "partitions": ["run.a:0", "run.a:1"],
            "timestamp": "2026-12-08T00:00:01+00:00",
        },
        {"event": "incident_saved", "timestamp": "2026-12-08T00:00:01.5+00:00"},
        {"event": "partitions_assigned", "partitions": ["run.b:0"], "timestamp": "2026-12-08T00:00:02+00:00"},
        {"event": "partitions_assigned", "partitions": ["run.a:2"], "timestamp": "2026-12-08T00:00:03+00:00"},
    ]
    assert all_assigned_at(lines, {"run.a", "run.b"}) == 1796688002.0
    assert all_assigned_at(lines[:2], {"run.a", "run.b"}) is None


def test_drain_figures_leave_out_what_was_stored_before_every_member_ran() -> None:
    """A head start of 1,250 before 5 s is not counted; after it, the clock starts at a's first write (6.5 s), the last route's."""
    lines = [
        (4.0, 1000, "a"),
        (4.5, 250, "a"),
        (6.0, 400, "b"),
        (6.002, 600, "b"),
        (6.5, 1000, "a"),
        (7.0, 250, "b"),
    ]
    assert drain_figures(lines, 5.0) == (2250, 250, 0.5)
