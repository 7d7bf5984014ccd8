"""glibc's mmap threshold is fixed at start-up, so freed fetch buffers leave the process's RSS.

Each case runs in a fresh interpreter: the allocator's state is per process and the pattern
below depends on what was allocated before it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from worker.ops.memory import fix_mmap_threshold

GLIBC = platform.libc_ver()[0] == "glibc"

# One larger buffer freed (glibc then raises its dynamic threshold to its size), then 30
# buffers of 5 MiB held at once (fetch answers), each followed by a 64 KiB allocation that
# outlives them (as a batch's decoded records do), then the buffers freed: what RSS keeps, in
# MiB. The pins hold 2 MiB of their own.
FETCH_PATTERN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from worker.ops.memory import fix_mmap_threshold

    def rss_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    base = rss_mib()
    warm = b"w" * (8 << 20)
    del warm
    buffers, pins = [], []
    for _ in range(30):
        buffers.append(b"x" * (5 << 20))
        pins.append(b"p" * (64 << 10))  # from malloc's heap, between the buffers, never freed here
    del buffers
    print(round(rss_mib() - base))
    """
)


def retained_mib(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", FETCH_PATTERN, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the dynamic mmap threshold is glibc's")
def test_freed_fetch_buffers_leave_rss_once_the_threshold_is_fixed() -> None:
    """150 MiB of buffers held then freed: with the fixed threshold, RSS gives (nearly) all of it back."""
    assert retained_mib("fixed") <= 16


@pytest.mark.skipif(not GLIBC, reason="the dynamic mmap threshold is glibc's")
def test_without_the_fixed_threshold_the_heap_keeps_the_freed_buffers() -> None:
    """Why the worker fixes it: glibc's default keeps most of the 150 MiB resident after the frees."""
    assert retained_mib("default") >= 100


def test_a_threshold_set_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ops who set MALLOC_MMAP_THRESHOLD_ themselves keep their value: the worker does not override it."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert fix_mmap_threshold() is False


def test_every_command_fixes_the_threshold_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`persistence-worker <command>` sets the threshold after reading its settings and before the command's handler."""
    import argparse

    import worker.commands.cli as cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "fix_mmap_threshold", lambda: calls.append("threshold") or True)
    parser = cli.build_parser()
    real_parse = parser.parse_args

    def parse(argv: list[str] | None = None) -> argparse.Namespace:
        args = real_parse(argv)
        args.handler = lambda _settings, _args: calls.append("handler") or 0
        return args

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["run"]) == 0
    assert calls == ["threshold", "handler"]
