"""Child processes a test starts (workers, Prometheus) are never left running after it, whatever it raised.

A test that failed between starting a `redeliver` replica and stopping it once left the replica
running for 22 minutes, competing with every test after it. `none_left_running()` (behind the
`processes` fixture) kills whatever is still running when it ends; `stop()` kills a process that
outlives its SIGTERM timeout before reporting the timeout.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterable, Iterator
from typing import Protocol

KILL_WAIT_S = 10


class Started(Protocol):
    """Holds the process it started (`WorkerProcess`); None until started."""

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...


@contextlib.contextmanager
def none_left_running() -> Iterator[list[Started]]:
    """A list to append each holder to, before starting it; at the end, any process still running is killed."""
    started: list[Started] = []
    try:
        yield started
    finally:
        kill_running(holder.process for holder in started)


def kill_running(processes: Iterable[subprocess.Popen[bytes] | None]) -> None:
    """SIGKILL every process still running, then reap them all."""
    running = [process for process in processes if process is not None and process.poll() is None]
    for process in running:
        process.kill()
    for process in running:
        process.wait(timeout=KILL_WAIT_S)


def stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM and the exit code; a process still running after `timeout` is killed, then TimeoutExpired raised."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_running([process])
        raise
