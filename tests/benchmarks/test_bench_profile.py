"""Specification of the benchmark's CPU breakdown: py-spy's stacks read and put in categories, the
breakdown and its targets, the flame graph drawn from them."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.flamegraph import MIN_WIDTH, layout, svg, tree, worker_svg
from tests.benchmarks.profile import WorkerProfile, read_collapsed
from tests.benchmarks.report_cpu import Breakdown, breakdown_section, cpu_targets, unattributed_frames
from tests.benchmarks.stacks import (
    CATEGORY_NAMES,
    UNATTRIBUTED,
    categorise,
    colour,
    counts,
    shares,
    waiting,
    work_frames,
)
from tests.benchmarks.worker_run import Drain

ENTRY = ";".join([
    "_run_module_as_main (<frozen runpy>)",
    "<module> (worker/__main__.py)",
    "main (worker/commands/cli.py)",
    "run (asyncio/runners.py)",
    "BaseEventLoop.run_forever (asyncio/base_events.py)",
    "BaseEventLoop._run_once (asyncio/base_events.py)",
])  # fmt: skip
"""The main thread's frames down to the event loop, as py-spy writes them (`--nolineno`)."""
TASK = ENTRY + ";Handle._run (asyncio/events.py)"
LOOP = "ConsumerLoop.run (worker/pipeline/consumer_loop.py);ConsumerLoop._handle (worker/pipeline/consumer_loop.py)"
BATCH = LOOP + ";BatchProcessor.process (worker/pipeline/batch.py)"


def stack(*frames: str) -> str:
    """A task's stack: the entry point, the event loop's hand-over, then `frames`."""
    return ";".join([TASK, *frames])


PREPARE = stack(BATCH, "BatchProcessor._prepare (worker/pipeline/batch.py)", "prepare (worker/pipeline/prepare.py)",
                "_document (worker/pipeline/prepare.py)", "BaseModel.model_validate (pydantic/main.py)")  # fmt: skip
WRITE = stack("RouteWrites._write_chunk (worker/pipeline/route_writes.py)", "InsertWriter.write (worker/mongo/writers.py)",
              "AsyncCollection.insert_many (pymongo/asynchronous/collection.py)",
              "_SelectorSocketTransport.write (asyncio/selector_events.py)")  # fmt: skip
SAVED_LINE = stack("RouteWrites._write_chunk (worker/pipeline/route_writes.py)", "log_saved (worker/pipeline/log_lines.py)",
                   "BytesLogger.msg (structlog/_output.py)")  # fmt: skip
COMMIT = stack(LOOP, "ConsumerLoop._commit (worker/pipeline/consumer_loop.py)",
               "GroupConsumer.commit (worker/kafka/consumer.py)", "AIOKafkaConsumer.commit (aiokafka/consumer/consumer.py)",
               "AIOKafkaConnection.send (aiokafka/conn.py)")  # fmt: skip
FETCH = stack("Fetcher._fetch_requests_routine (aiokafka/consumer/fetcher.py)",
              "PartitionRecords._unpack_records (aiokafka/consumer/fetcher.py)")  # fmt: skip
OWN_LOOP = stack(BATCH, "BatchProcessor._prepare_all (worker/pipeline/batch.py)",
                 "BaseEventLoop.create_task (asyncio/base_events.py)")  # fmt: skip
LAG = stack(LOOP, "CommitLag.publish (worker/kafka/lag.py)", "GroupConsumer.position (worker/kafka/consumer.py)",
            "AIOKafkaConsumer.position (aiokafka/consumer/consumer.py)")  # fmt: skip
TRANSPORT = stack("_SelectorSocketTransport._read_ready (asyncio/selector_events.py)",
                  "StreamReader.feed_data (asyncio/streams.py)")  # fmt: skip
SELECT = ENTRY + ";EpollSelector.select (selectors.py)"
THREAD = "_bootstrap (threading.py);Thread.run (threading.py);_worker (concurrent/futures/thread.py)"


def name(prefix: str) -> str:
    """The one category whose name starts with `prefix`."""
    (found,) = [category for category in CATEGORY_NAMES if category.startswith(prefix)]
    return found


def test_read_collapsed_adds_up_repeated_stacks_and_skips_other_lines() -> None:
    """py-spy's raw lines are `stack count`; a stack twice is summed; a line without a count is ignored."""
    text = "a (x.py);b (y.py) 3\nc (z.py) 2\na (x.py);b (y.py) 4\n\nno count here\n"
    assert read_collapsed(text) == {"a (x.py);b (y.py)": 7, "c (z.py)": 2}


def test_work_frames_start_after_the_event_loop_s_last_hand_over() -> None:
    """The entry point's frames go; a stack stopping in the loop keeps that frame; a thread's stays whole."""
    assert work_frames(stack("a (worker/x.py)", "b (y.py)")) == ["a (worker/x.py)", "b (y.py)"]
    assert work_frames(ENTRY) == ["BaseEventLoop._run_once (asyncio/base_events.py)"]
    assert work_frames(THREAD) == THREAD.split(";")


@pytest.mark.parametrize(
    ("sample", "category"),
    [
        (PREPARE, "prepare"),
        (WRITE, "BSON"),
        (SAVED_LINE, "logging"),
        (COMMIT, "commits"),
        (FETCH, "consume"),
        (OWN_LOOP, "the worker's own loop"),
        (LAG, "the worker's lag"),
        (TRANSPORT, "asyncio"),
        (stack("Handle._run (asyncio/events.py)"), "asyncio"),
        (THREAD, UNATTRIBUTED),
    ],
)
def test_a_stack_goes_to_the_first_category_naming_a_frame_below_the_event_loop(
    sample: str, category: str
) -> None:
    """A category takes everything its frames call (pydantic under prepare, the socket under pymongo,
    aiokafka under the commit or the lag); the worker's frames around them, and the entry point's
    `worker/__main__.py` above the loop, do not make a stack the worker loop's."""
    assert categorise(sample) == (category if category == UNATTRIBUTED else name(category))


def test_only_a_stack_that_stops_in_select_is_a_wait() -> None:
    """The selector's `select` as the innermost frame is a wait for a core; anything it calls is not."""
    assert waiting(SELECT)
    assert waiting(ENTRY + ";DefaultSelector.select (selectors.py)")
    assert not waiting(SELECT + ";something (selectors.py)")
    assert not waiting(PREPARE)


def test_shares_leave_the_waits_out_and_cover_every_category() -> None:
    """3 prepare, 1 write and 4 waits: prepare 75 %, BSON 25 %, the rest 0 and present."""
    stacks = {PREPARE: 3, WRITE: 1, SELECT: 4}
    found = shares(stacks)
    assert list(found) == list(CATEGORY_NAMES)
    assert found[name("prepare")] == 0.75
    assert found[name("BSON")] == 0.25
    assert sum(found.values()) == pytest.approx(1.0)
    assert counts(stacks)[name("asyncio")] == 0


def test_shares_of_only_waits_is_an_error() -> None:
    """No working sample: no shares to give."""
    with pytest.raises(ValueError):
        shares({SELECT: 5})


def test_the_breakdown_scales_each_share_to_the_end_to_end_cpu_per_event() -> None:
    """80 µs per event end to end; 6 prepare, 2 write, 1 thread and 1 wait: 53.3, 17.8 and 8.9 µs."""
    breakdown = Breakdown.of({PREPARE: 6, WRITE: 2, THREAD: 1, SELECT: 1}, 80.0)
    assert breakdown.total == 9
    assert breakdown.waits == 1
    assert breakdown.us(name("prepare")) == pytest.approx(80 * 6 / 9)
    assert breakdown.us(name("BSON")) == pytest.approx(80 * 2 / 9)
    assert breakdown.unattributed == pytest.approx(1 / 9)
    target, measured, met = breakdown.target()
    assert "< 10% of end to end" in target
    assert measured == "11.1% (8.9 of 80.0 µs)"
    assert met == "**no**"


def test_the_breakdown_meets_its_target_below_ten_percent_unattributed() -> None:
    """1 unattributed sample in 11 is 9.1 %: met; none at all: met."""
    assert Breakdown.of({PREPARE: 10, THREAD: 1}, 50.0).target()[2] == "yes"
    assert Breakdown.of({PREPARE: 10}, 50.0).target()[1] == "0.0% (0.0 of 50.0 µs)"


def profile(stacks: dict[str, int], cpu_seconds: float = 1.0) -> WorkerProfile:
    drained = Drain(
        events=1000,
        counted_events=900,
        timed_events=800,
        seconds=2.0,
        cpu_seconds={"worker": 0.045},
        cpu_window_s=2.5,
    )
    return WorkerProfile(stacks, drained, cpu_seconds, rate_hz=100)


def test_the_breakdown_section_has_a_row_per_category_and_says_whether_rest_is_under_ten_percent() -> None:
    """Rows with samples, share and µs; the end-to-end row; the waits and the sampled time stated."""
    stacks = {PREPARE: 6, WRITE: 2, THREAD: 1, SELECT: 1}
    text = "\n".join(breakdown_section(profile(stacks), Breakdown.of(stacks, 80.0), timed=True))
    assert f"| {name('prepare')} | 6 | 66.7% | 53.3 |" in text
    assert f"| {UNATTRIBUTED} | 1 | 11.1% | 8.9 |" in text
    assert "| end to end | 9 | 100.0% | 80.0 |" in text
    assert "10 samples, i.e. 0.1 s found running, against 1.0 s of CPU" in text
    assert "those (1) are left out" in text
    assert "Left out of the categories: 11.1% of end to end (8.9 µs per event); under 10%: **no**." in text
    assert "`_worker (concurrent/futures/thread.py)` (1)" in text


def test_unattributed_frames_are_the_innermost_most_sampled_first() -> None:
    """Two unattributed stacks ending in the same frame add up; attributed ones are not listed."""
    other = "x (a.py);y (b.py)"
    assert unattributed_frames({THREAD: 1, other: 2, "z (c.py);y (b.py)": 2, PREPARE: 9}) == [
        ("y (b.py)", 4), ("_worker (concurrent/futures/thread.py)", 1)
    ]  # fmt: skip


def test_a_drain_s_cpu_is_per_counted_record_and_its_rate_per_timed_record() -> None:
    """0.045 CPU seconds over the 900 records counted: 50 µs; 800 timed records in 2 s: 400/s; the CPU share over its own window."""
    drained = profile({PREPARE: 1}).drained
    assert drained.cpu_us_per_event() == pytest.approx(50.0)
    assert drained.rate == 400.0
    assert drained.cpu_share == {"worker": pytest.approx(0.018)}


def test_cpu_targets_are_30_us_and_six_times_consume_only() -> None:
    """30 µs with consume at 5 µs meets both; 31 µs misses the first, 6.2 x the second."""
    (absolute, relative) = cpu_targets([5.0, 4.0, 6.0], [30.0])
    assert absolute == ("worker CPU per event end to end ≤ 30 µs", "30.0 µs", "yes")
    assert relative[1:] == ("6.0 x (30.0 vs 5.0 µs)", "yes")
    (absolute, relative) = cpu_targets([5.0], [31.0, 40.0, 20.0])
    assert absolute[2] == "**no**"
    assert relative[1:] == ("6.2 x (31.0 vs 5.0 µs)", "**no**")
    assert cpu_targets([5.0], []) == []
    assert len(cpu_targets([], [25.0])) == 1


def test_the_flame_graph_tree_counts_each_frame_s_samples() -> None:
    """A frame holds the samples of every stack through it; the root holds them all."""
    root = tree({"a;b": 3, "a;c": 1, "d": 2})
    assert root.samples == 6
    assert root.children["a"].samples == 4
    assert root.children["a"].children["b"].samples == 3
    assert root.depth() == 3


def test_layout_places_siblings_by_name_as_wide_as_their_samples() -> None:
    """Over 600 px: `a` (4 of 6) 400 px from 0, `d` 200 px from 400; `a`'s children `b` then `c`."""
    boxes = {box.path: box for box in layout(tree({"d": 2, "a;c": 1, "a;b": 3}), 600)}
    assert (boxes[("a",)].x, boxes[("a",)].width) == (0, 400)
    assert (boxes[("d",)].x, boxes[("d",)].width) == (400, 200)
    assert (boxes[("a", "b")].x, boxes[("a", "c")].x) == (0, 300)
    assert boxes[("a", "c")].depth == 2


def test_layout_leaves_out_boxes_too_narrow_to_see_and_what_they_call() -> None:
    """One sample in 10,000 over 1,000 px is 0.1 px, under MIN_WIDTH: neither it nor its callee is drawn."""
    assert MIN_WIDTH > 1000 / 10_000
    paths = {box.path for box in layout(tree({"a": 9_999, "b;c": 1}), 1000)}
    assert paths == {(), ("a",)}


def test_the_svg_has_a_box_per_frame_with_its_samples_and_escaped_names() -> None:
    """Each frame's tooltip gives its samples and share; `<module>` is escaped; the legend is drawn."""
    text = svg({"<module> (x.py);f (x.py)": 3, "<module> (x.py);g (x.py)": 1}, title="T & t", subtitle="s",
               colour=lambda path: "#123456", legend=[("#abcdef", "a legend")])  # fmt: skip
    assert "<title>&lt;module&gt; (x.py): 4 samples (100.00%)</title>" in text
    assert "<title>f (x.py): 3 samples (75.00%)</title>" in text
    assert "T &amp; t" in text
    assert len(re.findall('fill="#123456"', text)) == 3
    assert "a legend" in text
    assert text.startswith("<svg ") and text.rstrip().endswith("</svg>")


def test_the_worker_svg_leaves_out_the_entry_point_and_the_waits_and_colours_by_category() -> None:
    """Boxes start at the task's frame; a wait is not drawn; the top box of a prepare stack is green."""
    text = worker_svg({PREPARE: 3, SELECT: 1}, title="t")
    assert "worker/__main__.py" not in text
    assert "EpollSelector" not in text
    assert "3 samples (1 stopped in select, waits for a core, left out)" in text
    assert colour(tuple(work_frames(PREPARE))) == "#2ca02c"
    assert "100.0%  " + name("prepare") in text
