"""Specification of the benchmark's pure helpers: CPU from /proc, percentiles, rates, its report tables."""

from __future__ import annotations

import os
import time

import pytest

from tests.benchmarks.__main__ import parse_args, throughput_phases
from tests.benchmarks.isolation import IsolationRun
from tests.benchmarks.latency import Latency
from tests.benchmarks.measure import (
    Spent,
    cpu_seconds,
    cpu_ticks,
    crossing_time,
    percentile,
    span_rate,
    tenth_rates,
)
from tests.benchmarks.report import (
    CONSUME,
    CONTRACT,
    NAIVE,
    PREPARE,
    WORKER,
    WRITE,
    WRITE_OPS,
    Results,
    markdown,
    summary_lines,
)
from tests.benchmarks.report_cpu import cpu_table
from tests.benchmarks.report_isolation import isolation_section, isolation_targets
from tests.benchmarks.report_telemetry import bottleneck, telemetry_targets
from tests.benchmarks.telemetry import BufferDrain, Ingest, TelemetryRun, pending_points, removed

# A /proc/<pid>/stat line: utime (14th field) 1234, stime (15th) 56.
STAT_TAIL = "S 1 1 1 0 -1 4194560 500 0 0 0 1234 56 0 0 20 0 3 0 1124123 3133440 388 18446744073709551615"


def test_cpu_ticks_are_utime_plus_stime() -> None:
    """utime and stime are the 14th and 15th fields of the stat line."""
    assert cpu_ticks(f"4242 (python) {STAT_TAIL}") == 1234 + 56


@pytest.mark.parametrize("name", ["my worker", "a) b (c", "x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 (", ")"])
def test_cpu_ticks_count_fields_after_the_last_parenthesis(name: str) -> None:
    """A process name with spaces or parentheses does not shift the fields."""
    assert cpu_ticks(f"4242 ({name}) {STAT_TAIL}") == 1290


def test_cpu_seconds_of_this_process_follow_its_own_cpu_time() -> None:
    """/proc/self/stat and os.times() agree within two ticks, and busy work shows up in both."""
    tick = 1 / os.sysconf("SC_CLK_TCK")
    before = cpu_seconds()
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    times = os.times()
    spent = cpu_seconds() - before
    assert spent >= 0.1 - 2 * tick
    assert abs(cpu_seconds(os.getpid()) - (times.user + times.system)) <= 2 * tick


def test_percentile_is_the_nearest_rank_of_the_sorted_values() -> None:
    """No interpolation: the value at index int(q * n) of the sorted values, the last one at most."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 0.5) == 51
    assert percentile(values, 0.99) == 100
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([7.0], 0.99) == 7


def test_percentile_of_nothing_is_an_error() -> None:
    """An empty sample has no percentile (the report prints n/a instead of asking)."""
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_span_rate_counts_the_writes_after_the_first_over_the_time_between() -> None:
    """The first write marks the start: its records are not part of the span; order does not matter."""
    writes = [(12.0, 300), (10.0, 1000), (11.0, 1000)]
    assert span_rate(writes) == (1300, 2.0)


def test_span_rate_needs_two_writes() -> None:
    """One write has no duration."""
    with pytest.raises(ValueError):
        span_rate([(1.0, 10)])


def test_spent_gives_rate_and_cpu_microseconds_per_event() -> None:
    """2,000 events in 0.5 s using 0.03 CPU seconds: 4,000 events/s, 15 µs each."""
    spent = Spent(events=2000, seconds=0.5, cpu_seconds=0.03)
    assert spent.rate == 4000
    assert spent.cpu_us_per_event == pytest.approx(15.0)


def test_cpu_table_shows_the_parts_their_sum_the_rest_and_one_core_s_rate() -> None:
    """Medians per part, their sum, end to end minus the sum, and 1e6 / end-to-end µs events/s."""
    lines = cpu_table({"consume": [3.0, 5.0, 4.0], "prepare": [10.0], "write": [6.0]}, [25.0, 30.0, 20.0])
    text = "\n".join(lines)
    assert "| sum of the parts | 20.0 | |" in text
    assert "| worker end to end (its process during the drain) | 25.0 | 20.0-30.0 |" in text
    assert "| 5.0 | 20% of end to end |" in text
    assert "One core carries about 40,000 events/s once MongoDB is not the bottleneck" in text


def test_cpu_table_without_every_part_gives_no_sum() -> None:
    """A sum of some parts would look like the whole: it is left out."""
    text = "\n".join(cpu_table({"prepare": [10.0]}, [25.0]))
    assert "sum of the parts" not in text
    assert "rest" not in text


def run(isolation: bool, rate: float, during: list[float], idle: list[float]) -> IsolationRun:
    return IsolationRun(isolation, drained=int(rate * 10), drain_seconds=10.0, during_ms=during, idle_ms=idle)


def test_isolation_targets_pool_the_runs_of_a_mode() -> None:
    """p99 over every isolated run's incidents; drain ratio of the modes' median rates."""
    runs = [
        run(True, 9000, [100.0] * 50, [20.0]),
        run(False, 10000, [900.0] * 50, [20.0]),
        run(True, 9400, [100.0] * 49 + [400.0], [20.0]),
        run(False, 10000, [800.0], [20.0]),
    ]
    (p99, during_over_idle, ratio) = isolation_targets(runs)
    assert p99[1].startswith("400 ms (100 incidents)")
    assert during_over_idle[1] == "20.00 x (400 vs 20 ms)"
    assert p99[2] == "**no**"
    assert ratio[1].startswith("0.92 x (9,200 vs 10,000 events/s)")
    assert ratio[2] == "yes"


def test_isolation_targets_are_met_within_bounds() -> None:
    """p99 of 250 ms and a ratio of 0.9 meet the targets."""
    (p99, ratio) = isolation_targets([run(True, 9000, [250.0], []), run(False, 10000, [2000.0], [])])
    assert (p99[2], ratio[2]) == ("yes", "yes")


def test_isolation_section_reports_both_modes_and_the_ratio() -> None:
    """One row per mode; a mode without idle incidents shows n/a rather than failing."""
    text = "\n".join(
        isolation_section([run(True, 5000, [10.0, 30.0], []), run(False, 4000, [50.0], [9.0])], 200, 2, 0)
    )
    assert "| true | 5,000 (1 run) | 2: 30 ms / 30 ms / 30 ms | 0: n/a / n/a / n/a |" in text
    assert "| false | 4,000 (1 run) | 1: 50 ms / 50 ms / 50 ms | 1: 9 ms / 9 ms / 9 ms |" in text
    assert "with isolation / without: 1.25 x" in text


def test_a_report_of_some_phases_only_is_written() -> None:
    """`--only isolation` gives a report with the isolation targets and no throughput section."""
    results = Results(facts={"CPU": "2 x test"}, events=0, naive_events=0)
    results.isolation = [run(True, 5000, [10.0], [5.0]), run(False, 5000, [10.0], [5.0])]
    text = markdown(results, "chart.png")
    assert "## Throughput" not in text
    assert "## Targets" in text
    assert "telemetry drain rate with isolation ≥ 0.9 x without | 1.00 x" in text


def test_the_latency_report_shows_each_process_s_cpu_share_by_window() -> None:
    """The steady load's p99 and each process's CPU share per 10 s of publishing, side by side."""
    results = Results(facts={"CPU": "2 x test"}, events=0, naive_events=0)
    results.latency = Latency(
        rate=100.0, seconds=20.0, count=4, latencies_ms=[10.0, 20.0, 30.0, 400.0],
        routes=["incidents"] * 4, published_s=[1.0, 2.0, 11.0, 12.0],
        cpu_by_window={"worker": [0.25, 0.5], "tansu": [0.125, 0.75]},
    )  # fmt: skip
    text = markdown(results, "chart.png")
    assert "p99 by 10 s of publishing: 20, 400 ms." in text
    assert "| process | 10 s | 20 s |" in text
    assert "| worker | 0.25 | 0.50 |" in text
    assert "| tansu | 0.12 | 0.75 |" in text


def test_only_selects_the_phases_each_repetition_runs() -> None:
    """cpu needs the parts and the worker, latency the worker; throughput everything."""
    assert throughput_phases(("isolation",)) == []
    assert throughput_phases(("cpu",)) == [CONSUME, WRITE_OPS, PREPARE, CONTRACT, WORKER]
    assert throughput_phases(("latency",)) == [WORKER]
    assert throughput_phases(("latency",), latency_rate=1000.0) == []
    assert throughput_phases(("throughput",)) == [CONSUME, WRITE, WRITE_OPS, PREPARE, CONTRACT, NAIVE, WORKER]


def test_only_refuses_an_unknown_phase() -> None:
    """A misspelt phase stops the run before anything starts."""
    with pytest.raises(SystemExit):
        parse_args(["--only", "isolaton"])
    assert parse_args(["--only", "isolation, cpu"]).only == ("isolation", "cpu")
    assert parse_args([]).only == ("throughput", "cpu", "latency", "memory", "isolation", "telemetry")


def test_the_telemetry_phase_drains_100_000_documents_and_10_000_when_quick() -> None:
    """`--telemetry-events` sizes the ingest backlog and the seeded buffer; `--quick` makes it small."""
    assert parse_args([]).telemetry_events == 100_000
    assert parse_args(["--quick"]).telemetry_events == 10_000
    assert parse_args(["--telemetry-events", "30000", "--only", "telemetry"]).telemetry_events == 30_000


def test_cpu_table_says_when_the_parts_cost_more_than_the_whole() -> None:
    """A negative rest is flagged as noise rather than shown as a plain figure."""
    text = "\n".join(cpu_table({"consume": [5.0], "prepare": [30.0], "write": [10.0]}, [40.0]))
    assert "| -5.0 | -12% of end to end: below zero, the parts alone cost more than in the worker" in text


def test_crossing_time_interpolates_between_the_samples_around_the_level() -> None:
    """From 100 pending at 2 s to 50 at 4 s, 75 is crossed at 3 s; a level met by a sample, at that sample."""
    points = [(0.0, 100), (2.0, 100), (4.0, 50), (5.0, 0)]
    assert crossing_time(points, 100) == 0.0
    assert crossing_time(points, 75) == 3.0
    assert crossing_time(points, 50) == 4.0
    assert crossing_time(points, 0) == 5.0


def test_crossing_time_of_a_level_never_reached_is_an_error() -> None:
    """A drain that did not finish has no time for its last tenth."""
    with pytest.raises(ValueError):
        crossing_time([(0.0, 100), (1.0, 60)], 50)


def test_tenth_rates_of_a_steady_drain_are_equal() -> None:
    """1,000 documents at 100/s, sampled each second after a 2 s start-up: ten tenths at 100/s."""
    points = [(0.0, 1000), (2.0, 1000)] + [(2.0 + s, 1000 - 100 * s) for s in range(1, 11)]
    assert tenth_rates(points, 1000) == pytest.approx([100.0] * 10)


def test_tenth_rates_show_a_drain_that_slows_down() -> None:
    """The first half at 200/s, the second at 50/s: tenths of 200 then 50, the last / first 0.25."""
    points = [(0.0, 1000), (2.5, 500), (12.5, 0)]
    rates = tenth_rates(points, 1000)
    assert rates[:5] == pytest.approx([200.0] * 5)
    assert rates[5:] == pytest.approx([50.0] * 5)


def test_pending_points_subtract_the_batches_of_every_loop_in_time_order() -> None:
    """Two loops' batches, read log by log, count down from the seed in the order they settled."""
    batches = [(103.0, 100), (101.0, 100), (102.0, 50)]
    assert pending_points(batches, 100.0, 300) == [(0.0, 300), (1.0, 200), (2.0, 150), (3.0, 50)]


def test_a_batch_removes_what_it_claimed_less_every_other_outcome() -> None:
    """Rescheduled, parked, unanswered and lost documents stay in the buffer (or go to someone else)."""
    line = {"claimed": 100, "delivered": 97, "rescheduled": 1, "parked": 1, "unanswered": 1, "lease_lost": 2}
    assert removed(line) == 95


def test_the_bottleneck_is_the_busiest_process_or_the_whole_machine() -> None:
    """A server busy over half the run holds it (saturated from 0.9); two busy cores mean the machine does."""
    assert (
        bottleneck({"redeliver": 0.4, "nx-27017": 0.95, "tansu": 0.1}, 2)
        == "nx-27017 (0.95 of a core, saturated)"
    )
    assert bottleneck({"redeliver": 0.03, "nx-27017": 0.86}, 2) == "nx-27017 (0.86 of a core)"
    assert bottleneck({"a": 0.9, "b": 0.9}, 2).startswith("the machine: its 2 cores 90% busy")
    assert bottleneck({"a": 0.3, "b": 0.45}, 2).startswith("none: the busiest, b, 0.45 of a core")


def drained(loops: int, seconds: float, shares: dict[str, float], slow_end: bool = False) -> BufferDrain:
    """A drain of 1,000 documents in `seconds`, steady, or with its last tenth at half the pace."""
    tenth = seconds / (11 if slow_end else 10)
    points = [(0.0, 1000)] + [(tenth * (i + 1), 1000 - 100 * (i + 1)) for i in range(9)]
    points.append((points[-1][0] + tenth * (2 if slow_end else 1), 0))
    return BufferDrain(loops, 1000, 1000, points, shares, batch_size=100)


def test_telemetry_targets_compare_drain_with_ingest_tenths_and_two_loops_with_one() -> None:
    """Drain 500/s vs ingest 400/s; last tenth at half the first; two loops 1.2 x with nx-27017 at a core."""
    ingest = Ingest(events=4000, seconds=10.0, cpu_share={"worker": 0.5})
    one = drained(1, 2.0, {"redeliver": 0.3, "nx-27017": 0.7}, slow_end=True)
    two = drained(2, 2.0 / 1.2, {"redeliver 1": 0.2, "redeliver 2": 0.2, "nx-27017": 0.96})
    over_ingest, tenths, loops = telemetry_targets(TelemetryRun(ingest, [one, two]), 2)
    assert over_ingest[1] == "1.25 x (500 vs 400 documents/s)" and over_ingest[2] == "yes"
    assert tenths[0].startswith("last tenth of the 1,000-document drain (1,000 tombstones at the start)")
    assert tenths[1] == "0.50 x (275 vs 550 documents/s)" and tenths[2] == "**no**"
    assert loops[1] == "1.20 x (600 vs 500 documents/s)"
    assert loops[2] == "**no**; bottleneck with two loops: nx-27017 (0.96 of a core, saturated)"


def test_the_report_has_a_telemetry_section_and_summary_lines() -> None:
    """`--only telemetry`: the section with both drains by tenth and the CPU shares, and its targets."""
    results = Results(facts={"CPU": "2 x test"}, events=0, naive_events=0)
    ingest = Ingest(events=4000, seconds=10.0, cpu_share={"worker": 0.5, "nx-27017": 0.8})
    one = drained(1, 4.0, {"redeliver": 0.3, "nx-27017": 0.7})
    results.telemetry = TelemetryRun(ingest, [one, drained(2, 2.0, {"redeliver 1": 0.2, "nx-27017": 0.5})])
    text = markdown(results, "chart.png")
    assert "## Telemetry delivery" in text
    assert "| 1 | 1,000 | 4.0 | 250 | 0.62 x | 1.00 x |" in text
    assert "| 2 | 1,000 | 2.0 | 500 | 1.25 x | 1.00 x |" in text
    assert "Two loops / one loop: 2.00 x." in text
    assert "| 10 % → 0 % | 250 | 500 |" in text
    assert "| nx-27017 | 0.80 | 0.70 | 0.50 |" in text
    assert "| redeliver 1 |  |  | 0.20 |" in text
    assert "- 1 loop: nx-27017 (0.70 of a core)." in text
    assert "at its defaults (REDELIVERY_BATCH_SIZE 100)" in text
    summary = summary_lines(results)
    assert summary[0].endswith("0.62 x (250 vs 400 documents/s) (**no**)")
    assert summary[2].startswith(
        "two loops ≥ 1.5 x one loop, where the servers are not the bottleneck: 2.00 x"
    )


def test_the_contract_sits_inside_prepare_and_the_libraries_floor_is_their_sum() -> None:
    """The contract's libraries are part of prepare: not added to the sum again; consume + contract +
    write path, each measured alone, is the floor the worker cannot go under, as a multiple of consume."""
    parts = {"consume": [4.0], "prepare": [10.0], "contract": [8.0], "write": [12.0]}
    text = "\n".join(cpu_table(parts, [40.0]))
    assert "| sum of the parts | 26.0 |" in text  # 4 + 10 + 12, the contract not again
    assert (
        "cost 24.0 µs per event (4.0 consume + 8.0 contract + 12.0 write path) = 6.0 x consume only" in text
    )
    assert "libraries alone" not in "\n".join(cpu_table({"consume": [4.0], "write": [12.0]}, [40.0]))
