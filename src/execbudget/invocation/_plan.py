"""
Admission planning for one model call: pure arithmetic, no I/O, no clock reads.

Input count → per-call caps → what the tightest budget can afford → the output allowance
to send → the worst case to hold. Everything here is a function of its arguments, so it
is tested without a ledger, a provider or a clock (``tests/invocation/test_plan.py``).

The allowance is the smallest of:

* the caller's ``max_tokens`` (or ``default_max_tokens`` when the caller gave none);
* the per-call output cap, and what the per-call cost cap can pay for (**caps**: a call
  that cannot get ``min_output_tokens`` under a cap is denied with ``reason="cap"``);
* what the room left on the chain can afford, per dimension: cost (through the price
  book's exact ``max_output_for``), tokens (room minus the input), output tokens
  (**room**: only read when the plan is *sized* from it, that is in ``clamp`` mode or
  when the caller gave no ``max_tokens``).

A plan sized from the room that ends up below the floor becomes a **probe** at the
floor: the ledger, which is the only authority, either grants it (someone released room
in between) or returns the typed denial naming the scope and line that refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from ..errors import BudgetExceeded, CostBudgetExceeded, OutputBudgetExceeded
from ..policy import CallCaps
from ..pricing import UNBOUNDED_OUTPUT, CacheWrite, ModelPrice, max_output_for, worst_case_for
from ..units import display, money_to_units, units_to_money

#: How a plan's allowance was chosen, which decides what a ledger denial means.
#:
#: * ``fixed``: the caller's (or a cap's) value; a denial is final (or triggers downgrade).
#: * ``sized``: sized from a read of the room; a denial means a concurrent caller took the
#:   room between the read and the reserve, so re-read and plan again (bounded).
#: * ``probe``: the room read said even the floor does not fit; the ledger decides.
#: * ``unbounded``: no budget and no cap limits the output; nothing is clamped or sent.
PlanKind = Literal["fixed", "sized", "probe", "unbounded"]

#: Dimensions whose room limits the output allowance.
ROOM_DIMENSIONS: Final = ("cost", "tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What the planner needs to know about one request, whatever its API."""

    model: str
    #: Input tokens: an upper bound of what the provider will bill (offline count).
    input_tokens: int
    #: The caller's output limit per choice (``max_tokens`` and friends); None if not given.
    requested_output: int | None
    #: Completions per request (chat ``n``); the allowance is per choice.
    choices: int = 1
    #: False for embeddings: no output, nothing to clamp.
    has_output: bool = True
    #: Which prompt-cache writes the request can make (narrows the worst input rate).
    cache_write: CacheWrite = "any"
    #: The smallest output limit the API accepts (the Responses API rejects < 16).
    min_output: int = 1


@dataclass(frozen=True, slots=True)
class Plan:
    """An admission plan: what to send and what to hold."""

    model: str
    kind: PlanKind
    #: ``max_tokens`` per choice to send; None: leave the request's field untouched.
    send_output: int | None
    #: Output tokens held for the whole call (per choice × choices).
    allowance: int
    input_tokens: int
    worst_cost: Decimal
    #: The hold: cost (Decimal), tokens, input_tokens, output_tokens, calls.
    amounts: Mapping[str, object]
    #: What bound the allowance: ``requested``, ``default``, ``cap``, ``cost_cap``,
    #: ``room:cost``, ``room:tokens``, ``room:output_tokens``, ``context`` or ``none``.
    bound_by: str


def hold_amounts(
    price: ModelPrice, input_tokens: int, allowance: int, cache_write: CacheWrite
) -> tuple[Decimal, dict[str, object]]:
    """The worst case of a call and the amounts to hold for it on every dimension."""
    worst = worst_case_for(price, input_tokens, allowance, cache_write)
    return worst, {
        "cost": worst,
        "tokens": input_tokens + allowance,
        "input_tokens": input_tokens,
        "output_tokens": allowance,
        "calls": 1,
    }


def affordable_output(
    price: ModelPrice, input_tokens: int, units: int, cache_write: CacheWrite
) -> int:
    """The largest output allowance whose worst case fits in ``units`` nano-units of money.

    The held cost is the worst case rounded *up* to a nano-unit, and ``units`` is a whole
    number of nano-units, so ``worst <= units / 1e9`` implies the hold fits exactly.
    """
    return max_output_for(price, input_tokens, units_to_money(units), cache_write)


def plan_call(
    request: CallRequest,
    *,
    price: ModelPrice,
    caps: CallCaps,
    room: Mapping[str, int] | None,
    sized: bool,
    default_output: int | None = None,
    scope: str = "call",
    currency: str = "USD",
) -> Plan | BudgetExceeded:
    """
    Plan one call, or return (not raise) the per-call cap denial.

    ``room`` is ``Enforcer.remaining()`` (least room per dimension on the chain); it is
    only used when ``sized`` is true. ``scope`` names the caller in cap denials.
    """
    model, inputs, k = request.model, request.input_tokens, max(1, request.choices)
    cache_write = request.cache_write
    if caps.max_input_tokens is not None and inputs > caps.max_input_tokens:
        return OutputBudgetExceeded(
            scope=scope,
            dimension="input_tokens",
            limit=f"{caps.max_input_tokens:,}",
            spent="0",
            held="0",
            requested=f"{inputs:,}",
            reason="cap",
            hint="shorten the prompt, or raise per_call.max_input_tokens in the policy",
        )
    if not request.has_output:
        worst, amounts = hold_amounts(price, inputs, 0, cache_write)
        if caps.max_cost is not None and money_to_units(worst) > caps.max_cost:
            return _cost_cap_denial(scope, caps.max_cost, worst, currency)
        return Plan(model, "fixed", None, 0, inputs, worst, amounts, "none")

    floor = max(1, caps.min_output_tokens, request.min_output)
    wanted: tuple[int, str] | None = None
    if request.requested_output is not None:
        wanted = (request.requested_output, "requested")
    elif default_output is not None:
        wanted = (default_output, "default")

    # Caps: per-call limits of the policy, whatever the budgets' room.
    cap_bounds: list[tuple[int, str]] = []
    if caps.max_output_tokens is not None:
        cap_bounds.append((caps.max_output_tokens, "cap"))
    if caps.max_cost is not None:
        per_call = affordable_output(price, inputs, caps.max_cost, cache_write)
        cap_bounds.append((_per_choice(per_call, k), "cost_cap"))
    # What the caller may get at least: the floor, or less if they asked for less.
    least = floor if wanted is None else min(floor, wanted[0])
    if cap_bounds:
        cap_n, cap_by = min(cap_bounds)
        if cap_n < least:
            if cap_by == "cost_cap":
                worst = worst_case_for(price, inputs, least * k, cache_write)
                return _cost_cap_denial(scope, caps.max_cost or 0, worst, currency)
            return OutputBudgetExceeded(
                scope=scope,
                dimension="output_tokens",
                limit=f"{cap_n:,}",
                spent="0",
                held="0",
                requested=f"{least:,}",
                reason="cap",
                hint="per_call.max_output_tokens is below the least output this call may "
                "get (per_call.min_output_tokens, or the API's own minimum); fix the policy",
            )
        least = min(least, cap_n)

    bounds = list(cap_bounds)
    if wanted is not None:
        bounds.append(wanted)
    room_bounds: list[tuple[int, str]] = []
    if sized and room:
        if "cost" in room:
            afford = affordable_output(price, inputs, room["cost"], cache_write)
            if afford < UNBOUNDED_OUTPUT:
                room_bounds.append((_per_choice(afford, k), "room:cost"))
        if "tokens" in room:
            room_bounds.append((_per_choice(room["tokens"] - inputs, k), "room:tokens"))
        if "output_tokens" in room:
            room_bounds.append((_per_choice(room["output_tokens"], k), "room:output_tokens"))
    bounds.extend(room_bounds)

    if not bounds:
        # Nothing limits the output: leave the request as it is. The hold still counts
        # the call and its input; output dimensions have no line to land on.
        context = price.context_window
        held = max(0, context - inputs) * k if context else 0
        worst, amounts = hold_amounts(price, inputs, held, cache_write)
        return Plan(model, "unbounded", None, held, inputs, worst, amounts, "none")

    n, bound_by = min(bounds)
    kind: PlanKind = "sized" if bound_by.startswith("room:") else "fixed"
    if n < least:  # only a room bound can be below ``least`` here
        n, kind = least, "probe"
    send: int | None = n
    context = price.context_window
    if (
        wanted is None
        and bound_by.startswith("room:")
        and context is not None
        and n * k >= context - inputs
    ):
        # The budget affords more than the model can ever write (output never exceeds
        # the context window minus the input), so do not send a huge max_tokens that real
        # APIs reject; hold the context bound instead, which is a true upper bound.
        n, send, bound_by = max(0, context - inputs), None, "context"
    allowance = n * k
    worst, amounts = hold_amounts(price, inputs, allowance, cache_write)
    return Plan(model, kind, send, allowance, inputs, worst, amounts, bound_by)


def _per_choice(total: int, choices: int) -> int:
    if total >= UNBOUNDED_OUTPUT:
        return UNBOUNDED_OUTPUT
    return total // choices if total > 0 else min(total, 0)


def _cost_cap_denial(scope: str, cap: int, worst: Decimal, currency: str) -> CostBudgetExceeded:
    return CostBudgetExceeded(
        scope=scope,
        dimension="cost",
        limit=display("cost", cap, currency),
        spent=display("cost", 0, currency),
        held=display("cost", 0, currency),
        requested=display("cost", money_to_units(worst), currency),
        reason="cap",
        hint="shorten the prompt, use a cheaper model, or raise per_call.max_cost",
    )


def request_timeout(
    caller: float | None,
    cap_s: float | None,
    deadline_left_s: float | None,
) -> tuple[float | None, bool]:
    """
    The request timeout: the least of the caller's, the per-call cap and the time left
    before the chain's deadline. Returns ``(timeout, bound_by_deadline)``.
    """
    best: float | None = None
    by_deadline = False
    for value, is_deadline in ((caller, False), (cap_s, False), (deadline_left_s, True)):
        if value is None:
            continue
        if best is None or value < best:
            best, by_deadline = value, is_deadline
    if best is not None:
        best = max(best, 0.001)
    return best, by_deadline


def should_downgrade(denial: BudgetExceeded) -> bool:
    """A cheaper model helps with a lack of money or tokens, not with calls or a block."""
    return denial.reason in ("limit", "cap") and denial.dimension in (
        "cost",
        "tokens",
        "input_tokens",
        "output_tokens",
    )
