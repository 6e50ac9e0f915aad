"""
Budget dimensions, their units, and the parsing of human-written amounts.

One written definition of each unit (also in docs/concepts.md):

========================  ==================================================================
dimension                 one unit is
========================  ==================================================================
``cost``                  one nano-unit (1e-9) of the policy currency; money is ``Decimal``
                          outside the ledger and an integer count of nano-units inside it
``tokens``                one token billed by the provider, input and output together
``input_tokens``          one input (prompt) token, cached or not
``output_tokens``         one output token, reasoning tokens included
``calls``                 one model invocation; every retry and the final answer count
``steps``                 one iteration of an agent loop
``tool_calls``            one tool execution; parallel tool calls count one each
``retries``               one re-attempt of a failed model or tool call
``fan_out``               one branch started by a fan-out (total over the scope's life)
``concurrency``           one branch running now (held while it runs, never spent)
``depth``                 nesting level of runs: the outermost run is depth 1
``time``                  seconds of wall-clock time since the scope opened
========================  ==================================================================

``depth`` and ``time`` are structural: they are checked by the runtime against the scope
chain, not stored in the ledger. Every other dimension is a ledger line.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from .errors import (
    BudgetExceeded,
    ConfigurationError,
    CostBudgetExceeded,
    DeadlineExceeded,
    FanOutExceeded,
    RetryBudgetExceeded,
    StepBudgetExceeded,
    TokenBudgetExceeded,
)


class Dimension(StrEnum):
    COST = "cost"
    TOKENS = "tokens"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    CALLS = "calls"
    STEPS = "steps"
    TOOL_CALLS = "tool_calls"
    RETRIES = "retries"
    FAN_OUT = "fan_out"
    CONCURRENCY = "concurrency"
    DEPTH = "depth"
    TIME = "time"


#: Dimensions kept as ledger lines (the rest are checked on the scope chain).
LEDGER_DIMENSIONS: Final = frozenset(Dimension) - {Dimension.DEPTH, Dimension.TIME}

#: The budget type (DESIGN §1) each dimension belongs to, as the exception raised on denial.
DENIAL_TYPES: Final[dict[str, type[BudgetExceeded]]] = {
    Dimension.COST: CostBudgetExceeded,
    Dimension.TOKENS: TokenBudgetExceeded,
    Dimension.INPUT_TOKENS: TokenBudgetExceeded,
    Dimension.OUTPUT_TOKENS: TokenBudgetExceeded,
    Dimension.CALLS: StepBudgetExceeded,
    Dimension.STEPS: StepBudgetExceeded,
    Dimension.TOOL_CALLS: StepBudgetExceeded,
    Dimension.DEPTH: StepBudgetExceeded,
    Dimension.RETRIES: RetryBudgetExceeded,
    Dimension.FAN_OUT: FanOutExceeded,
    Dimension.CONCURRENCY: FanOutExceeded,
    Dimension.TIME: DeadlineExceeded,
}

#: Ledger units per unit of money (a nano-unit is the ledger's money integer).
UNITS_PER_MONEY: Final = 1_000_000_000
NANO: Final = Decimal(UNITS_PER_MONEY)
_MAX_UNITS: Final = 2**62  # ledgers store signed 64-bit integers; leave headroom for sums


def dimension(name: str) -> Dimension:
    """The dimension called ``name``, or a ConfigurationError listing the allowed names."""
    try:
        return Dimension(name)
    except ValueError:
        allowed = ", ".join(d.value for d in Dimension)
        raise ConfigurationError(f"unknown budget dimension {name!r}; allowed: {allowed}") from None


class LedgerUnits(dict[str, int]):
    """
    Amounts already in ledger units (money in nano-units, rounded up; counts as they are),
    which ``Enforcer.to_units`` passes through as they are: a wrapped call computes its
    settlement in integers (``usage_units``) rather than in Decimal money to convert
    back. The ledger still checks every value.
    """

    __slots__ = ()


def money_to_units(amount: Decimal) -> int:
    """Money to ledger nano-units, rounded up so a hold is never smaller than the money."""
    units = int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))
    if 0 <= units <= _MAX_UNITS:  # every hold and settlement: check_units only names a fault
        return units
    return check_units(units, what="money")


def units_to_money(units: int) -> Decimal:
    return (Decimal(units) / NANO).normalize()


def money_text(units: int) -> str:
    """
    ``f"{units_to_money(units):f}"`` without the Decimal: plain digits, no exponent, no
    trailing zeros (``1_500_000_000`` → ``"1.5"``). Every gateway answer shows three or four
    amounts; integer arithmetic is a fifth of the time.
    """
    if units < 0:
        return "-" + money_text(-units)
    whole, nanos = divmod(units, UNITS_PER_MONEY)
    if not nanos:
        return str(whole)
    return f"{whole}.{nanos:09d}".rstrip("0")


def check_units(value: int, *, what: str = "amount") -> int:
    """Reject negative or absurd integer amounts before they reach a ledger."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be a whole number, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value}")
    if value > _MAX_UNITS:
        raise ConfigurationError(f"{what} {value} is larger than the ledger can store (2**62)")
    return value


_MONEY = re.compile(r"^\s*(?P<sym>\$)?\s*(?P<num>[-+0-9.,_eE]+)\s*(?P<cur>[A-Za-z]{3})?\s*$")
_COUNT = re.compile(r"^\s*(?P<num>[-+0-9._eE]+)\s*(?P<suffix>[kKmMbBgG]?)\s*$")
_DURATION = re.compile(r"^\s*(?P<num>[-+0-9._eE]+)\s*(?P<unit>ms|s|m|min|h|d)?\s*$")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_SECONDS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "": Decimal(1),
    "m": Decimal(60),
    "min": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}


def _decimal(text: str, what: str, original: object = None) -> Decimal:
    shown = text if original is None else original
    try:
        value = Decimal(text.replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ConfigurationError(f"{what}: {shown!r} is not a number") from None
    if not value.is_finite():
        raise ConfigurationError(f"{what}: {shown!r} is not a finite number")
    if value < 0:
        raise ConfigurationError(f"{what}: {shown!r} is negative; budgets are never negative")
    return value


def parse_money(value: object, *, currency: str = "USD", what: str = "money") -> Decimal:
    """
    ``"0.50 USD"``, ``"$0.50"``, ``Decimal("0.5")`` or ``0.5`` → ``Decimal`` in ``currency``.

    A currency other than the policy's is an error, not a silent conversion.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected an amount of money, got {value!r}")
    if isinstance(value, Decimal | int):
        return _decimal(str(value), what)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what}: {value!r} is not a finite number")
        return _decimal(repr(value), what)
    if not isinstance(value, str):
        raise ConfigurationError(f"{what}: expected an amount like '0.50 USD', got {value!r}")
    match = _MONEY.match(value)
    if not match:
        raise ConfigurationError(f"{what}: {value!r} is not an amount like '0.50 USD' or '$0.50'")
    cur = (match["cur"] or ("USD" if match["sym"] else currency)).upper()
    if cur != currency.upper():
        raise ConfigurationError(
            f"{what}: {value!r} is in {cur} but the policy currency is {currency.upper()}"
        )
    return _decimal(match["num"], what, value)


def parse_count(value: object, *, what: str = "count") -> int:
    """``"200k"``, ``"1.5M"``, ``"10_000"`` or ``30`` → a whole, non-negative number."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a whole number, got {value!r}")
    if isinstance(value, int):
        return check_units(value, what=what)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ConfigurationError(f"{what}: {value!r} is not a whole number")
        return check_units(int(value), what=what)
    if not isinstance(value, str):
        raise ConfigurationError(f"{what}: expected a number like 30 or '200k', got {value!r}")
    match = _COUNT.match(value)
    if not match:
        raise ConfigurationError(f"{what}: {value!r} is not a count like 30, '200k' or '1.5M'")
    number = _decimal(match["num"], what, value) * _SUFFIX[match["suffix"].lower()]
    if number != number.to_integral_value():
        raise ConfigurationError(f"{what}: {value!r} is not a whole number")
    return check_units(int(number), what=what)


def parse_duration(value: object, *, what: str = "duration") -> Decimal:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float | Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{what}: {value!r} is not a finite number")
        return _decimal(str(value), what)
    if not isinstance(value, str):
        raise ConfigurationError(f"{what}: expected a duration like '30s', got {value!r}")
    match = _DURATION.match(value)
    if not match:
        raise ConfigurationError(f"{what}: {value!r} is not a duration like '30s', '500ms', '2m'")
    return _decimal(match["num"], what, value) * _SECONDS[match["unit"] or ""]


def parse_limit(dim: Dimension, value: object, *, currency: str = "USD", what: str = "") -> int:
    """A limit in ledger units: nano-units for cost, milliseconds for time, else counts."""
    what = what or dim.value
    if dim is Dimension.COST:
        return money_to_units(parse_money(value, currency=currency, what=what))
    if dim is Dimension.TIME:
        seconds = parse_duration(value, what=what)
        return check_units(
            int((seconds * 1000).to_integral_value(rounding=ROUND_CEILING)), what=what
        )
    return parse_count(value, what=what)


def display(dim: str, units: int, currency: str = "USD") -> str:
    """Ledger units in the unit a person reads: money, seconds, or a count."""
    if dim == Dimension.COST:
        return f"{units_to_money(units):f} {currency}"
    if dim == Dimension.TIME:
        return f"{Decimal(units) / 1000:f}s"
    return f"{units:,}"
