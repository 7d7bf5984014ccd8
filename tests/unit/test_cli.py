"""The command line's contract: help, configuration errors, and the documented settings."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker.commands.exits import exit_cleanly_on_sigterm
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd=ROOT)  # fmt: skip


def test_help_explains_every_command() -> None:
    """`--help` lists the commands and `run --help` explains dead-lettering and commits."""
    top = run_cli("--help")
    assert top.returncode == 0
    assert "run" in top.stdout and "indexes" in top.stdout
    run = run_cli("run", "--help")
    assert "dlq" in run.stdout and "committed" in run.stdout


def test_a_wrong_setting_fails_with_one_line_naming_the_variable() -> None:
    """A bad RETRY_MAX_ATTEMPTS stops start-up with exit 2 and one line naming it, before any connection."""
    result = run_cli("run", env={"PATH": "/usr/bin:/bin", "RETRY_MAX_ATTEMPTS": "0"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: RETRY_MAX_ATTEMPTS:")


def test_an_unknown_fail_closed_route_is_named() -> None:
    """FAIL_CLOSED_ROUTES with a typo names the variable instead of being ignored."""
    result = run_cli("run", env={"PATH": "/usr/bin:/bin", "FAIL_CLOSED_ROUTES": "incidnets"})
    assert result.returncode == 2
    assert "FAIL_CLOSED_ROUTES" in result.stderr


def test_every_setting_is_documented_in_the_configuration_reference() -> None:
    """Each environment variable the worker reads has a row in docs/configuration.md's settings tables."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", reference, flags=re.MULTILINE))
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - documented == set()


def test_sigterm_during_start_up_exits_0_instead_of_dying_by_the_signal() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        exit_cleanly_on_sigterm()
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # give the interpreter a bytecode boundary to run the handler
        assert exited.value.code == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
