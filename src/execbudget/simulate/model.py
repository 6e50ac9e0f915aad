"""
The simulator's results: one ``ScenarioResult`` per failure pattern, holding two
``Variant`` runs (without budgets, or with the platform layer only, and with the full
enforcement stack).

Spend is in the scenario's unit: money (``USD``) where the pattern burns money, provider
requests for the retry storm, whose failed calls are not billed in tokens but still spend
rate limits, capacity and time. Overshoot is spend beyond the scenario's budget, measured
on the provider's bill, never on execbudget's own books.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "LAYER_NAMES",
    "Point",
    "ScenarioResult",
    "Stop",
    "Variant",
    "fmt",
]

#: (seconds since the variant began, cumulative spend)
Point = tuple[float, Decimal]

LAYER_NAMES: Final = {1: "invocation", 2: "agent loop", 3: "orchestration", 4: "platform"}


@dataclass(frozen=True, slots=True)
class Stop:
    """What ended a run: a budget at one of the four layers, or something else (``layer=None``)."""

    layer: int | None
    what: str

    @property
    def text(self) -> str:
        if self.layer is None:
            return self.what
        return f"layer {self.layer} ({LAYER_NAMES[self.layer]}): {self.what}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "layer_name": LAYER_NAMES.get(self.layer) if self.layer else None,
            "budget": self.what,
            "text": self.text,
        }


@dataclass(slots=True)
class Variant:
    """One run of a scenario, as the provider billed it."""

    #: ``no budgets``, ``platform cap only`` or ``execbudget``
    mode: str
    #: the provider's bill in the scenario's unit (money, or requests)
    spend: Decimal
    #: HTTP requests the provider received, every retry included
    requests: int
    #: requests it answered with 200
    answered: int
    elapsed_s: float
    stop: Stop
    #: stopped by the simulator's safety cap: it would have gone on
    capped: bool = False
    timeline: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: execbudget's own count of the headline dimension (execbudget variants)
    books: Decimal | None = None
    #: ledger lines above their limit, overrun, blocked or still held (should be empty)
    problems: list[str] = field(default_factory=list)
    #: the scenario's own measurements, machine-readable (latencies, requests served, ...)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, unit: str, budget: Decimal) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "spend": str(self.spend),
            "spend_display": fmt(self.spend, unit),
            "overshoot": str(max(Decimal(0), self.spend - budget)),
            "requests": self.requests,
            "answered": self.answered,
            "elapsed_s": round(self.elapsed_s, 3),
            "stopped_by": self.stop.to_dict(),
            "safety_cap": self.capped,
            "books": None if self.books is None else str(self.books),
            "ledger_problems": list(self.problems),
            "notes": list(self.notes),
            "metrics": dict(self.metrics),
            "timeline": [[round(t, 4), str(v)] for t, v in self.timeline],
        }


@dataclass(slots=True)
class ScenarioResult:
    """A failure pattern run twice, and the budget both runs are measured against."""

    pattern: str
    title: str
    #: ``USD`` or ``requests``
    unit: str
    #: the scenario's headline budget in ``unit``: what the full stack must hold spend to
    budget: Decimal
    #: the budgets in force under the full stack, as shown in the report
    budget_label: str
    without: Variant
    budgeted: Variant
    notes: list[str] = field(default_factory=list)

    def overshoot(self, variant: Variant) -> Decimal:
        return max(Decimal(0), variant.spend - self.budget)

    @property
    def contained(self) -> bool:
        """Zero overshoot on the provider's bill, clean books, and no safety cap needed."""
        b = self.budgeted
        return self.overshoot(b) == 0 and not b.capped and not b.problems

    @property
    def failure_shown(self) -> bool:
        """The run without (full) budgets really overspent the budget."""
        return self.overshoot(self.without) > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "title": self.title,
            "unit": self.unit,
            "budget": str(self.budget),
            "budget_label": self.budget_label,
            "contained": self.contained,
            "failure_shown": self.failure_shown,
            "without": self.without.to_dict(self.unit, self.budget),
            "with": self.budgeted.to_dict(self.unit, self.budget),
            "notes": list(self.notes),
        }


def fmt(amount: Decimal, unit: str) -> str:
    """``$0.0123`` / ``$12.34`` for money, ``1,440 requests`` otherwise."""
    if unit == "USD":
        return f"${amount:,.2f}" if amount >= 10 else f"${amount:.4f}"
    return f"{int(amount):,} {unit}"
