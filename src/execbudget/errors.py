"""
The whole exception tree of execbudget, in one place.

```
ExecBudgetError(Exception)
├── ConfigurationError (also ValueError)    bad policy, URL, amount, or a missing extra
│   └── PolicyError                         an invalid policy file: file, path, found, allowed
├── BudgetExceeded                          denied before the spend; never retry it
│   ├── TokenBudgetExceeded                 tokens, input_tokens, output_tokens
│   ├── OutputBudgetExceeded                per-call output cap or input-context cap
│   ├── StepBudgetExceeded                  steps, calls, tool_calls, depth
│   ├── RetryBudgetExceeded                 retries
│   ├── FanOutExceeded                      fan_out (branches started), concurrency (in flight)
│   ├── DeadlineExceeded                    time: elapsed past the deadline
│   ├── CostBudgetExceeded                  cost (money)
│   ├── UnpricedModelError                  a model with no known price (fail closed)
│   └── ScopeKilled                         an operator's kill switch on a scope
├── ReservationError                        unknown hold, or a hold used after it settled
└── LedgerUnavailable                       the ledger could not be reached (fail closed)
```

Denials (``BudgetExceeded``) are decisions, not faults: they carry the scope, dimension,
limit, spent, held, requested and, for calendar windows, the reset time, and their message
says what ran out and what to change. Retry helpers must never retry them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class ExecBudgetError(Exception):
    """Base of every error raised by execbudget."""


class ConfigurationError(ExecBudgetError, ValueError):
    """Bad input from the caller: a malformed policy, URL or amount, or a missing extra."""


class PolicyError(ConfigurationError):
    """
    An invalid policy file or object.

    The message names the file, the path to each bad value, what was found and what is
    allowed, so the user can fix it without reading our source.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid policy {source}:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.problems))


class BudgetExceeded(ExecBudgetError):
    """
    An action was denied before it started because a budget could not hold it.

    Attributes:
        scope: the scope that refused (for example ``org:acme``), the first level of the
            chain that could not grant.
        dimension: the budget dimension (``cost``, ``tokens``, ``steps``, ...).
        limit: the limit of that line, in the dimension's display unit.
        spent: what is already spent on the line.
        held: what is held by in-flight actions on the line.
        requested: what this action asked for.
        window: the window id of the line (``total``, ``d2026-12-04``, ...).
        resets_at: when the window resets (``None`` for ``total`` lines).
        reason: ``limit`` (not enough left), ``overrun`` (the line is blocked after an
            overrun), ``cap`` (a per-call cap), ``deadline`` or ``killed``.
    """

    budget_type = "budget"

    def __init__(
        self,
        *,
        scope: str,
        dimension: str,
        limit: Any,
        spent: Any,
        held: Any,
        requested: Any,
        window: str = "total",
        resets_at: datetime | None = None,
        reason: str = "limit",
        hint: str | None = None,
    ) -> None:
        self.scope = scope
        self.dimension = dimension
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        self.window = window
        self.resets_at = resets_at
        self.reason = reason
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.scope} [{self.dimension}, window {self.window}]"
        if self.reason == "overrun":
            head = (
                f"{self.budget_type} budget blocked on {where}: an earlier action overran its "
                f"hold (spent {self.spent} of limit {self.limit})"
            )
        elif self.reason == "killed":
            head = f"scope {self.scope} is stopped by its kill switch"
        elif self.reason == "cap":
            head = (
                f"{self.budget_type} cap on {where}: requested {self.requested}, cap {self.limit}"
            )
        else:
            remaining = _remaining(self.limit, self.spent, self.held)
            head = (
                f"{self.budget_type} budget exhausted on {where}: requested {self.requested}, "
                f"limit {self.limit}, spent {self.spent}, held {self.held}"
                + (f", remaining {remaining}" if remaining is not None else "")
            )
        tail = f"; resets at {self.resets_at.isoformat()}" if self.resets_at else ""
        hint = self.hint or (
            f"raise the {self.dimension} limit of {self.scope.split('#')[0]} in the policy, "
            "or make the action smaller"
        )
        return f"{head}{tail}. To proceed: {hint}."

    def to_dict(self) -> dict[str, Any]:
        """The denial as plain data (the gateway's 402 body uses this)."""
        return {
            "type": "budget_exceeded",
            "budget_type": self.budget_type,
            "scope": self.scope,
            "dimension": self.dimension,
            "window": self.window,
            "limit": str(self.limit),
            "spent": str(self.spent),
            "held": str(self.held),
            "requested": str(self.requested),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "reason": self.reason,
            "message": str(self),
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_denial, (type(self), self.__dict__.copy()))


def _rebuild_denial(cls: type[BudgetExceeded], state: dict[str, Any]) -> BudgetExceeded:
    state = {k: v for k, v in state.items() if k not in {"args", "__traceback__"}}
    state.pop("budget_type", None)
    return cls(**state)


def _remaining(limit: Any, spent: Any, held: Any) -> Any:
    try:
        return limit - spent - held
    except TypeError:
        return None


class TokenBudgetExceeded(BudgetExceeded):
    budget_type = "token"


class OutputBudgetExceeded(BudgetExceeded):
    budget_type = "output"


class StepBudgetExceeded(BudgetExceeded):
    budget_type = "step"


class RetryBudgetExceeded(BudgetExceeded):
    budget_type = "retry"


class FanOutExceeded(BudgetExceeded):
    budget_type = "fan-out"


class DeadlineExceeded(BudgetExceeded):
    """The time budget ran out; ``spent`` is the elapsed time and ``limit`` the budget."""

    budget_type = "time"

    def _message(self) -> str:
        return (
            f"time budget exhausted on {self.scope}: elapsed {self.spent}, limit {self.limit}. "
            f"To proceed: {self.hint or 'raise the time limit in the policy or do less work'}."
        )


class CostBudgetExceeded(BudgetExceeded):
    budget_type = "cost"


class UnpricedModelError(BudgetExceeded):
    """A model call was denied because the price book has no price for the model."""

    budget_type = "cost"

    def _message(self) -> str:
        return (
            f"model {self.requested!r} has no known price, so its worst case cannot be held. "
            "To proceed: add it under pricing.models in the policy, set pricing.fallback_model, "
            "or set pricing.unpriced: allow (fail open)."
        )


class ScopeKilled(BudgetExceeded):
    budget_type = "kill switch"


class ReservationError(ExecBudgetError):
    """A hold was used wrongly: committed twice with different amounts, or unknown."""


class LedgerUnavailable(ExecBudgetError):
    """
    The ledger could not be reached or failed, so no hold could be made (fail closed).

    The original driver error is chained as ``__cause__``.
    """

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(
            f"budget ledger {backend} is unavailable: {detail}. Nothing was spent. "
            "Check that the ledger server or file is reachable and writable; set "
            "failure_mode: open in the policy only if running without budgets is acceptable."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.backend, self.detail))
