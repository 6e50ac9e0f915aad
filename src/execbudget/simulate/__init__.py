"""
The failure-pattern simulator: today's named budget failures, reproduced and contained.

Five patterns, each run twice against a fake OpenAI-compatible provider on loopback with
the real SDK clients (and LangGraph where an agent framework fits): once as today's tools
run it (no budgets, or a platform spend cap alone) and once under execbudget's full
enforcement stack. Spend is read from the provider's own log; overshoot under execbudget
must be zero. See docs/failure-patterns.md.

    execbudget simulate [PATTERN] [--json] [--ledger URL] [--chart FILE]
    python -m execbudget.demo                   # every pattern, a table and a chart

From code (needs the ``all`` extra: openai, LangGraph, tenacity, matplotlib, the fake
provider's server)::

    from execbudget.simulate.runner import simulate

    sim = simulate(["retry-storm"], ledger="memory://", small=True)
    assert sim.contained

This module stays light (the command line imports it at start-up); the scenarios import
their frameworks when they run.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_LEDGER", "PATTERNS"]

#: the failure patterns, in report order
PATTERNS: Final = (
    "runaway-recursion",
    "silent-fan-out",
    "cost-latency-coupling",
    "partial-enforcement",
    "retry-storm",
)

#: the simulator's own embedded ledger (kept apart from the application's default one)
DEFAULT_LEDGER: Final = "sqlite:///.execbudget/simulate.db"
