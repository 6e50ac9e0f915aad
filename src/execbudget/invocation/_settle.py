"""
Settlement arithmetic and the stream meter (pure: no I/O, no clock).

A call settles from the usage the provider reports. With none (usage omitted, a stream
cut or abandoned, an error mid-stream), it settles from a local count of what was
received: the *upper* estimate of the output, but never above the allowance unless the
*lower* estimate proves the provider wrote more than it was allowed. Sending
``max_tokens`` is a contract, so output within it cannot exceed it; only a provider that
ignores it can, and then the lower count is the evidence and the overrun is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from ..errors import OutputBudgetExceeded
from ..pricing import ModelPrice, TokenCounter, Usage, cost_for, cost_units_for
from ..units import LedgerUnits
from ._apis import Api, OutputTally
from ._plan import Plan


def usage_amounts(price: ModelPrice, usage: Usage) -> dict[str, Any]:
    """The actual amounts to commit for ``usage``, on every dimension a call holds."""
    cost: Decimal = cost_for(price, usage)
    return {
        "cost": cost,
        "tokens": usage.total_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "calls": 1,
    }


def usage_units(price: ModelPrice, usage: Usage) -> LedgerUnits:
    """``usage_amounts`` in ledger units (cost in nano-units, rounded up as ``to_units``
    rounds it): a settlement commits them as they are, with no Decimal arithmetic."""
    return LedgerUnits(
        cost=cost_units_for(price, usage),
        tokens=usage.total_tokens,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        calls=1,
    )


def local_usage(plan: Plan, tally: OutputTally, start: Usage | None = None) -> Usage:
    """Usage counted locally (see the module docstring for the rule)."""
    output = tally.upper if tally.lower > plan.allowance else min(tally.upper, plan.allowance)
    if start is not None and start.input_tokens:
        return Usage(
            input_tokens=start.input_tokens,
            output_tokens=output,
            cache_read_tokens=start.cache_read_tokens,
            cache_write_tokens=start.cache_write_tokens,
            cache_write_1h_tokens=start.cache_write_1h_tokens,
        )
    return Usage(input_tokens=plan.input_tokens, output_tokens=output)


def _merge(start: Usage | None, final: Usage) -> Usage:
    """Anthropic reports input at ``message_start`` and output at ``message_delta``."""
    if start is None or final.input_tokens:
        return final
    return Usage(
        input_tokens=start.input_tokens,
        output_tokens=final.output_tokens,
        cache_read_tokens=start.cache_read_tokens,
        cache_write_tokens=start.cache_write_tokens,
        cache_write_1h_tokens=start.cache_write_1h_tokens,
        reasoning_tokens=min(final.reasoning_tokens, final.output_tokens),
    )


class Verdict(Enum):
    DELIVER = "deliver"
    HIDE = "hide"  # a usage chunk the wrapper asked for, not the caller
    CUT = "cut"  # the output went past the hold: stop reading


@dataclass(slots=True)
class StreamMeter:
    """Counts a stream's output as it arrives and decides when to cut it."""

    api: Api
    plan: Plan
    price: ModelPrice
    tally: OutputTally
    hide_usage: bool
    start: Usage | None = None
    final: Usage | None = None
    chunks: int = 0
    cut: bool = False

    @classmethod
    def begin(
        cls, api: Api, plan: Plan, price: ModelPrice, counter: TokenCounter, *, hide_usage: bool
    ) -> StreamMeter:
        return cls(api, plan, price, OutputTally.start(counter, plan.model), hide_usage)

    def observe(self, chunk: Any) -> Verdict:
        self.chunks += 1
        info = self.api.chunk(chunk, self.tally)
        if info.usage is not None:
            if info.final:
                self.final = _merge(self.start, info.usage)
            else:
                self.start = info.usage
        if self.tally.lower > self.plan.allowance:
            self.cut = True
            return Verdict.CUT
        if info.hidden and self.hide_usage:
            return Verdict.HIDE
        return Verdict.DELIVER

    def usage(self) -> Usage:
        """Reported usage if the provider sent it, else the local count."""
        if self.final is not None and not self.cut:
            return self.final
        return local_usage(self.plan, self.tally, self.start)

    def actual(self) -> dict[str, Any]:
        return usage_amounts(self.price, self.usage())

    def cut_error(self) -> OutputBudgetExceeded:
        return OutputBudgetExceeded(
            scope=f"call:{self.plan.model}",
            dimension="output_tokens",
            limit=f"{self.plan.allowance:,}",
            spent=f"{self.tally.upper:,}",
            held=f"{self.plan.allowance:,}",
            requested=f"{self.tally.lower:,}+",
            reason="cap",
            hint="the provider wrote past the max_tokens that was sent, so the stream was "
            "cut at the hold and the overrun recorded; use the output received so far",
        )
