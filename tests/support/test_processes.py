"""Specifications of the harness that stops the processes a test starts (it judges other tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.support.processes import none_left_running, stop

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
)


@dataclass
class Holder:
    """Stands for a `WorkerProcess`: the process it started, None until started."""

    process: subprocess.Popen[bytes] | None = None


def test_a_failing_body_still_kills_every_process_it_started() -> None:
    """A test body that raises leaves no process running, started or not."""
    sleeper, never_started = Holder(), Holder()
    with pytest.raises(AssertionError), none_left_running() as started:
        started.extend([sleeper, never_started])
        sleeper.process = subprocess.Popen(["sleep", "60"])
        raise AssertionError("the test failed")
    assert sleeper.process.poll() == -signal.SIGKILL


def test_stop_kills_a_process_that_ignores_sigterm_past_its_timeout() -> None:
    """`stop` reports the timeout, and the process no longer runs."""
    process = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # SIGTERM is ignored from now on
    with pytest.raises(subprocess.TimeoutExpired):
        stop(process, 0.2)
    assert process.poll() == -signal.SIGKILL
    process.stdout.close()


def test_stop_returns_the_exit_code_of_a_process_that_honours_sigterm() -> None:
    """A process that exits on SIGTERM is waited for and its code returned."""
    assert stop(subprocess.Popen(["sleep", "60"]), 10) == -signal.SIGTERM
