"""py-spy on the worker process while it drains: its collapsed stacks, for the flame graph and the
CPU breakdown (tests.benchmarks.stacks)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka.structs import TopicPartition

from tests.benchmarks.measure import cpu_seconds
from tests.benchmarks.worker_run import Drain, drain
from worker.settings import Settings

RATE_HZ = 200
"""Samples a second, of the threads running at that moment (idle ones left out)."""
STOP_TIMEOUT_S = 60


def py_spy_binary() -> str:
    """py-spy beside this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: `make setup` installs the dev dependency group")
    return found


@dataclass
class Recording:
    """The worker's CPU seconds (/proc) over the time py-spy sampled it, to compare with the samples."""

    cpu_seconds: float = 0.0


@contextlib.contextmanager
def recording(pid: int, raw_path: Path, *, rate_hz: int = RATE_HZ) -> Iterator[Recording]:
    """py-spy samples process `pid` until the block ends; the collapsed stacks (`frame;frame;... count`
    per line, root first) are then in `raw_path`.

    `--nonblocking`: py-spy reads the stacks without pausing the process. Pausing it (py-spy's
    default) costs the worker time, and then py-spy took threads waiting in epoll or on the thread
    pool's queue for running ones (a test of a process busy 10 % of the time: 127 samples, 74 of
    them idle waits, against 58, of which 1); read while running, a stack is rarely torn, and py-spy
    drops those it cannot read (its `Errors`).
    """
    command = [
        py_spy_binary(), "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw",
        "--nolineno", "--nonblocking", "--output", str(raw_path),
    ]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, cpu_before = Recording(), cpu_seconds(pid)
    try:
        yield seen
    finally:
        seen.cpu_seconds = cpu_seconds(pid) - cpu_before
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        output, _ = spy.communicate(timeout=STOP_TIMEOUT_S)
    if spy.returncode != 0 or not raw_path.exists():
        text = output.decode(errors="replace").strip()
        raise RuntimeError(f"py-spy exited with {spy.returncode}: {text[-2000:]}")


def read_collapsed(text: str) -> dict[str, int]:
    """Samples per stack of py-spy's raw output (`a;b;c 12` a line); the same stack twice adds up."""
    stacks: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def read_collapsed_file(path: Path) -> dict[str, int]:
    return read_collapsed(path.read_text())


@dataclass
class WorkerProfile:
    """One extra drain of the backlog under py-spy: its samples per stack, and the drain itself
    (not timed: py-spy shares the cores with it)."""

    stacks: dict[str, int]
    drained: Drain
    cpu_seconds: float
    """The worker's CPU (/proc) while py-spy sampled it."""
    rate_hz: int = RATE_HZ

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    @property
    def sampled_seconds(self) -> float:
        """The time py-spy found the worker running: its samples over its rate."""
        return self.samples / self.rate_hz


async def profiled_drain(
    settings: Settings,
    ends: Mapping[TopicPartition, int],
    log_path: Path,
    raw_path: Path,
    *,
    timeout_s: float,
) -> WorkerProfile:
    """The worker draining `ends` with py-spy attached from its partitions' assignment to the last commit."""
    seen: list[Recording] = []

    @contextlib.contextmanager
    def observe(pid: int) -> Iterator[None]:
        with recording(pid, raw_path) as spied:
            seen.append(spied)
            yield

    drained = await drain(settings, ends, log_path, timeout_s=timeout_s, observe=observe)
    return WorkerProfile(read_collapsed_file(raw_path), drained, seen[0].cpu_seconds)
