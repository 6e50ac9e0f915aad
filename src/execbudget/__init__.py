"""
execbudget: execution budgets for LLM and agent systems, held before the spend.

Seven budget types (token, output, step, retry, fan-out, time, cost) at four layers (a
model call, the agent loop, the workflow, the platform). Every action first holds its
worst case on every enclosing scope, atomically; only a granted hold lets it start; the
actual usage is settled after. See docs/concepts.md.

    import execbudget

    execbudget.configure(policy="budgets.yaml")          # ledger: .execbudget/ledger.db
    with execbudget.run("triage", limits={"steps": 20}) as run:
        run.step()
"""

from __future__ import annotations

from .api import configure, current, get_enforcer, hold, run, scope
from .clock import Clock, ManualClock, SystemClock
from .context import ContextThreadPoolExecutor, bind, submit
from .enforcer import Decision, Enforcer, Hold
from .errors import (
    BudgetExceeded,
    ConfigurationError,
    CostBudgetExceeded,
    DeadlineExceeded,
    ExecBudgetError,
    FanOutExceeded,
    LedgerUnavailable,
    OutputBudgetExceeded,
    PolicyError,
    ReservationError,
    RetryBudgetExceeded,
    ScopeKilled,
    StepBudgetExceeded,
    TokenBudgetExceeded,
    UnpricedModelError,
)
from .invocation import wrap
from .ledger import AsyncLedger, Ledger, LineKey, LineRequest
from .loop import Steps, tool
from .orchestration import Branch, FanOutReport, FanOutResult
from .policy import Policy
from .run import Scope
from .units import Dimension
from .windows import Window

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncLedger",
    "Branch",
    "BudgetExceeded",
    "Clock",
    "ConfigurationError",
    "ContextThreadPoolExecutor",
    "CostBudgetExceeded",
    "DeadlineExceeded",
    "Decision",
    "Dimension",
    "Enforcer",
    "ExecBudgetError",
    "FanOutExceeded",
    "FanOutReport",
    "FanOutResult",
    "Hold",
    "Ledger",
    "LedgerUnavailable",
    "LineKey",
    "LineRequest",
    "ManualClock",
    "OutputBudgetExceeded",
    "Policy",
    "PolicyError",
    "ReservationError",
    "RetryBudgetExceeded",
    "Scope",
    "ScopeKilled",
    "StepBudgetExceeded",
    "Steps",
    "SystemClock",
    "TokenBudgetExceeded",
    "UnpricedModelError",
    "Window",
    "__version__",
    "bind",
    "configure",
    "current",
    "get_enforcer",
    "hold",
    "run",
    "scope",
    "submit",
    "tool",
    "wrap",
]
