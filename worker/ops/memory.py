"""Keep the process's resident memory tracking what it holds (glibc only).

Kafka fetch answers arrive as large buffers (up to `KAFKA_MAX_PARTITION_FETCH_BYTES` per
partition, several MiB on brokers that overshoot it). glibc serves an allocation that large
with its own mmap and unmaps it on free, but its *dynamic* mmap threshold rises to the size of
each such block freed (up to 32 MiB), after which the next buffers come from the heap instead.
Allocations made in between that outlive the buffers pin that heap, the freed buffers cannot
be trimmed, and RSS ratchets up with the amount fetched rather than with what is held: the benchmark
measured peaks of 144-164 MiB that wandered from run to run, against a flat 124 MiB with a
fixed threshold (docs/benchmarks.md).

A fixed threshold (setting it disables the dynamic one) keeps every buffer of 1 MiB or more
on its own mapping, returned to the system as soon as it is freed. glibc's own
`MALLOC_MMAP_THRESHOLD_` environment variable, when set, wins: it was applied before Python
started and this module then leaves it alone.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the mmap threshold (glibc's malloc.h)."""
DEFAULT_MMAP_THRESHOLD = 1024 * 1024
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Set glibc's mmap threshold to `threshold` bytes; True if it was set by this call.

    False, doing nothing, when the C library is not glibc (musl, macOS) or when
    `MALLOC_MMAP_THRESHOLD_` is set in the environment."""
    if os.environ.get(ENV_OVERRIDE):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
