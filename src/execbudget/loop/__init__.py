"""
Agent-loop guards (layer 2): steps, tool calls and retries, charged before they happen.

* ``Steps`` — ``for step in run.steps():`` charges one ``steps`` before each iteration.
* ``tool`` — ``@execbudget.tool`` / ``run.tool(fn)``: one ``tool_calls`` per execution.
* retries — ``run.retry()`` charges one ``retries``; ``execbudget.integrations.tenacity``
  plugs the same charge into tenacity, with a stop condition and a predicate that never
  retries a denial.

Units are defined once in ``execbudget.units``; docs/loop.md maps them onto each
framework's own notion of a step.
"""

from __future__ import annotations

from ._steps import Steps
from ._tools import acharge_tool_call, charge_tool_call, guard_tool, tool

__all__ = ["Steps", "acharge_tool_call", "charge_tool_call", "guard_tool", "tool"]
