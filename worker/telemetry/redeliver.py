"""Moved: the wiring to worker.telemetry.assembly, the drain to worker.telemetry.loop.

Kept only for the imports of commands/replay.py and commands/redeliver.py (whose owner moves them
at the merge of issue 24); delete it then.
"""

from worker.telemetry.assembly import buffer_for as buffer_for
from worker.telemetry.assembly import loop_for as loop_for
from worker.telemetry.loop import DrainTotals as DrainTotals
from worker.telemetry.loop import drain_due as drain_due
