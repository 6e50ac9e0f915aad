"""The curated public API: ``__all__`` is complete and importable."""

from __future__ import annotations

import execbudget


def test_all_is_unique_and_importable() -> None:
    names = execbudget.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(execbudget, name) is not None


def test_the_names_the_issue_promises() -> None:
    for name in (
        "configure",
        "Enforcer",
        "run",
        "Ledger",
        "AsyncLedger",
        "Policy",
        "BudgetExceeded",
        "LedgerUnavailable",
        "CostBudgetExceeded",
        "TokenBudgetExceeded",
        "StepBudgetExceeded",
        "RetryBudgetExceeded",
        "FanOutExceeded",
        "DeadlineExceeded",
        "OutputBudgetExceeded",
    ):
        assert name in execbudget.__all__


def test_every_denial_is_a_budget_exceeded_and_every_error_an_execbudget_error() -> None:
    for name in execbudget.__all__:
        obj = getattr(execbudget, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, execbudget.ExecBudgetError), name
