"""
Orchestration (layer 3): fan-out by count and projected cost, concurrency, deadlines.

* ``run.map(fn, items)`` / ``await run.amap(fn, items)`` — a fan-out admitted before any
  branch starts (refused or truncated; ``FanOutResult.report`` says which), each branch in
  a child scope of the run, concurrency held per worker, cancelled at the deadline.
* ``run.branch()`` — one branch started by hand: a ``fan_out`` charge and a
  ``concurrency`` hold released when it ends.
* ``call_with_deadline`` — wait for a sync callable no longer than the time left.

See docs/orchestration.md.
"""

from __future__ import annotations

from ._admission import FanOutReport, FanOutSettings, settings_for
from ._branch import Branch
from ._deadline import call_with_deadline, deadline_error, remaining_s
from ._fanout import FanOutResult, fan_out_amap, fan_out_map

__all__ = [
    "Branch",
    "FanOutReport",
    "FanOutResult",
    "FanOutSettings",
    "call_with_deadline",
    "deadline_error",
    "fan_out_amap",
    "fan_out_map",
    "remaining_s",
    "settings_for",
]
