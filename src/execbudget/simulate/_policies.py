"""
Full-stack policies for the scenarios, built from one complete base.

"The full enforcement stack" means every cell ``execbudget audit`` requires is filled: a
per-call output cap (layer 1); steps, calls, tool calls, retries and a spend cap on every
run (layer 2); fan-out, concurrency and a time limit (layer 3); an org spend cap per day
(layer 4). Each scenario then tightens the one or two budgets its story is about, so the
report can say which one stopped it, while the others still stand behind it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

__all__ = ["MODEL", "ORG", "amount", "org_rule", "run_rule"]

#: every scenario calls the same priced model: the bill is in real list prices
MODEL: Final = "gpt-4o"
#: the tenant every scenario runs under
ORG: Final = "acme"

_RUN_DEFAULTS: Final[dict[str, Any]] = {
    "steps": 60,
    "calls": 60,
    "tool_calls": 60,
    "retries": 5,
    "fan_out": 20,
    "concurrency": 8,
    "time": "60s",
    "cost": "1 USD",
}


def org_rule(day: str = "25 USD") -> dict[str, Any]:
    """The platform layer: the org's spend per calendar day."""
    return {"match": f"org:{ORG}", "limits": {"cost": {"day": day}}}


def run_rule(
    match: str,
    *,
    max_output_tokens: int = 512,
    on_excess: str | None = None,
    **limits: Any,
) -> dict[str, Any]:
    """
    A complete rule for ``match`` (``run:name`` or ``workflow:name``): the defaults above,
    overridden by ``limits`` (a value of ``None`` removes that budget).
    """
    merged = {**_RUN_DEFAULTS, **limits}
    rule: dict[str, Any] = {
        "match": match,
        "limits": {k: v for k, v in merged.items() if v is not None},
        "per_call": {"max_output_tokens": max_output_tokens, "min_output_tokens": 16},
    }
    if on_excess is not None:
        rule["fan_out"] = {"on_excess": on_excess}
    return rule


def amount(money: str) -> Decimal:
    """``Decimal("0.10")`` from ``"0.10 USD"``: the policy's spelling, as a number."""
    return Decimal(money.split()[0])
