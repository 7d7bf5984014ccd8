"""Where the worker's CPU goes: py-spy's samples of its drain, each stack put in one category.

A stack (root first, `function (path)` per frame) is read from the frame the event loop runs
(after its last `Handle._run`): the entry point's frames above it (`worker/__main__.py` down to
`asyncio.run`) are in every sample and say nothing. It goes to the first category of CATEGORIES
that names any of those frames, so a category takes the whole subtree below its frames: everything
under `log_saved` is logging, everything under the consumer loop's `_commit` is commits, everything
under `prepare` is preparing, whatever library does the work. The narrow categories come first,
the worker's own loop and the event loop last. A stack that stops in the event loop itself
(`_run_once`) is the event loop's; one of another thread is read whole.

A sample that stops in the selector's `select` is left out (`working`): it is the event loop's
thread back from `epoll_wait` and runnable, but waiting for a core. py-spy counts a runnable thread
as running; with two processes spinning beside a test process busy 10 % of the time, its `select`
samples went from 29 to 130 while its CPU did not move (49 and 43 ticks of 10 ms in 5 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

UNATTRIBUTED = "other (unattributed)"


@dataclass(frozen=True)
class Category:
    name: str
    colour: str
    """Of its boxes in the flame graph."""
    files: tuple[str, ...]
    """Frames of these files are the category's: `pkg/` a package, `pkg/mod.py` a module."""
    functions: tuple[str, ...] = ()
    """And these functions, as `name (path)`: one function of a file shared with other categories."""

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        files = r"\((?:.*/)?(?:" + "|".join(map(re.escape, self.files)) + ")"
        functions = [
            "^" + re.escape(name) + r" \((?:.*/)?" + re.escape(path.rstrip(")")) + r"\)"
            for name, _, path in (function.partition(" (") for function in self.functions)
        ]
        return re.compile("|".join([files, *functions]))


CATEGORIES: tuple[Category, ...] = (
    Category("logging (structlog, logging, the saved and rejected lines)", "#e5ae38",
             ("structlog/", "logging/", "worker/ops/logging.py", "worker/ops/library_logs.py",
              "worker/ops/redaction.py", "worker/pipeline/log_lines.py")),
    Category("metrics (prometheus_client)", "#8c564b", ("prometheus_client/", "worker/ops/metrics.py")),
    Category("dead letters and the producer", "#9467bd",
             ("worker/dead_letters/", "worker/kafka/producer.py", "aiokafka/producer/")),
    Category("commits and group membership (aiokafka's coordinator)", "#d62728",
             ("aiokafka/consumer/group_coordinator.py",),
             ("ConsumerLoop._commit (worker/pipeline/consumer_loop.py)", "GroupConsumer.commit (worker/kafka/consumer.py)")),
    Category("prepare: decode, validate, document (worker.pipeline.prepare, schemas, pydantic)", "#2ca02c",
             ("worker/pipeline/prepare.py", "worker/pipeline/decode.py", "worker/mongo/encoding.py",
              "schemas/", "pydantic/", "pydantic_core/", "annotated_types/")),
    Category("BSON + the driver's send (pymongo, bson, worker.mongo's writers)", "#1f77b4",
             ("pymongo/", "bson/", "worker/mongo/")),
    Category("the worker's lag bookkeeping (worker.kafka.lag: positions for the write gate's holds)", "#e377c2",
             ("worker/kafka/lag.py",)),
    Category("consume: fetches, record decoding, the connections' reads (aiokafka)", "#17becf",
             ("aiokafka/", "worker/kafka/")),
    Category("the worker's own loop: write gate, batches, chunks, retries (worker.*, tenacity)", "#ff7f0e",
             ("worker/", "tenacity/")),
    Category("asyncio event loop and scheduling (asyncio, selectors)", "#bcbd22",
             ("asyncio/", "selectors.py", "uvloop/")),
)  # fmt: skip
"""In the order a stack is matched: the first naming one of its frames takes it."""
CATEGORY_NAMES = (*(category.name for category in CATEGORIES), UNATTRIBUTED)
UNATTRIBUTED_COLOUR = "#c7c7c7"


LOOP_FRAME = re.compile(
    r"^(?:Handle\._run|BaseEventLoop\._run_once) \((?:.*/)?asyncio/(?:events|base_events)\.py\)"
)
"""Where the event loop hands over to a callback or a task, or waits for the next."""


def work_frames(stack: str) -> list[str]:
    """The frames of a collapsed stack below the event loop's last hand-over (all of them if none)."""
    frames = stack.split(";")
    loop = [index for index, frame in enumerate(frames) if LOOP_FRAME.search(frame)]
    if not loop:
        return frames
    return frames[loop[-1] + 1 :] or [frames[loop[-1]]]


WAIT_FRAME = re.compile(r"^(?:\w+Selector\.)?select \((?:.*/)?selectors\.py\)$")


def waiting(stack: str) -> bool:
    """The stack stops in the selector's `select`: a wait, not work (see the module's docstring)."""
    return bool(WAIT_FRAME.search(stack.rpartition(";")[2]))


def working(stacks: Mapping[str, int]) -> dict[str, int]:
    """`stacks` less those that stop in a wait."""
    return {stack: count for stack, count in stacks.items() if not waiting(stack)}


def categorise(stack: str) -> str:
    """The category of a collapsed stack (`frame;frame;...`, root first)."""
    frames = work_frames(stack)
    for category in CATEGORIES:
        if any(category.pattern.search(frame) for frame in frames):
            return category.name
    return UNATTRIBUTED


def colour(path: tuple[str, ...]) -> str:
    """A flame graph box's colour: its category, as if the stack stopped there (so each stack's top
    box has the colour of the category its samples are counted in)."""
    return COLOURS[categorise(";".join(path))]


COLOURS = {category.name: category.colour for category in CATEGORIES} | {UNATTRIBUTED: UNATTRIBUTED_COLOUR}


def counts(stacks: Mapping[str, int]) -> dict[str, int]:
    """Samples per category, in CATEGORY_NAMES order (every category present), waits left out."""
    per_category = dict.fromkeys(CATEGORY_NAMES, 0)
    for stack, samples in working(stacks).items():
        per_category[categorise(stack)] += samples
    return per_category


def shares(stacks: Mapping[str, int]) -> dict[str, float]:
    """Each category's fraction of the samples, waits left out, in CATEGORY_NAMES order."""
    per_category = counts(stacks)
    total = sum(per_category.values())
    if not total:
        raise ValueError("no samples")
    return {name: count / total for name, count in per_category.items()}
