"""
The price book: which rate card prices a model, what a call may cost at worst, what it cost.

Resolution order for ``price(model)``, first match wins:

1. a policy **override** for the name (exact, case-insensitive), for ``provider/name``, for
   the name without its ``provider/`` prefix, then the longest matching ``*`` pattern;
2. the bundled ``genai-prices`` data (offline; see :mod:`.catalog`);
3. the policy's **fallback model**, priced by 1 or 2 (the ``source`` says so);
4. if ``allow_unpriced``: a zero rate card (fail open, an explicit opt-in);
5. otherwise :class:`~execbudget.errors.UnpricedModelError` (fail closed).

The arithmetic is pure (no I/O, no clock reads: the clock is injected) and exact in
``Decimal``; see :meth:`PriceBook.worst_case_cost` for what the worst case covers.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Context, Decimal
from fractions import Fraction
from typing import Final, Literal

from ..errors import ConfigurationError, UnpricedModelError
from ..units import _MAX_UNITS, UNITS_PER_MONEY, check_units, money_to_units
from . import catalog
from .rates import PER_MTOK, ModelPrice, PriceTier
from .usage import Usage

#: Which prompt-cache writes a call may make, for :meth:`PriceBook.worst_case_cost`.
CacheWrite = Literal["any", "none", "5m", "1h"]

#: :meth:`PriceBook.max_affordable_output` when output is free: no budget limits it.
UNBOUNDED_OUTPUT: Final = sys.maxsize

_CACHE_WRITE_MODES: Final = ("any", "none", "5m", "1h")
_EXACT: Final = Context(prec=80)  # far above any tokens x rate product: every result is exact
#: The same precision, for the hot arithmetic below: its operations are called on the
#: context directly (``ctx.multiply(a, b)`` is ``a * b`` under ``localcontext(ctx)``,
#: without copying and installing a context per call). Only its flags change; no trap
#: that is not also one of ``_EXACT``'s is enabled.
_ARITH: Final = Context(prec=80)
_MTOK: Final = Decimal(PER_MTOK)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_tokens(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be an int >= 0, got {value!r}")


def _worst_input_rate(level: PriceTier, cache_write: CacheWrite) -> Decimal:
    """The dearest way one input token of this tier can be billed."""
    rate = level.input_per_mtok
    if level.cache_read_per_mtok is not None:
        rate = max(rate, level.cache_read_per_mtok)
    write_5m = (
        level.cache_write_per_mtok
        if level.cache_write_per_mtok is not None
        else level.input_per_mtok
    )
    write_1h = (
        level.cache_write_1h_per_mtok if level.cache_write_1h_per_mtok is not None else write_5m
    )
    if cache_write in ("any", "5m"):
        rate = max(rate, write_5m)
    if cache_write in ("any", "1h"):
        rate = max(rate, write_1h)
    return rate


def _worst_output_rate(level: PriceTier) -> Decimal:
    """The dearest way one output token of this tier can be billed (reasoning or not)."""
    if level.reasoning_per_mtok is None:
        return level.output_per_mtok
    return max(level.output_per_mtok, level.reasoning_per_mtok)


class PriceBook:
    """
    Prices of models: bundled ``genai-prices`` data plus policy overrides and fallbacks.

    Args:
        overrides: model name (or ``*`` pattern, or ``provider/name``) → rate card. Use
            :func:`~execbudget.pricing.parse_price_overrides` for policy-style values.
        fallback_model: price unknown models as this model (which must itself be priced).
        allow_unpriced: price unknown models at zero instead of denying them (fail open).
        currency: the currency of the book; every override must use it. Bundled prices are
            USD and are only used by a USD book.
        clock: returns the current time; picks date-dependent prices (price changes
            announced ahead). Defaults to the system clock in UTC.

    Raises:
        ConfigurationError: an override is not a ``ModelPrice``, uses another currency, or
            the fallback model has no price.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice] | None = None,
        *,
        fallback_model: str | None = None,
        allow_unpriced: bool = False,
        currency: str = "USD",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.currency = currency.upper()
        self.allow_unpriced = bool(allow_unpriced)
        self._clock = clock or _utc_now
        self._exact: dict[str, ModelPrice] = {}
        self._patterns: list[tuple[str, ModelPrice]] = []
        for name, price in (overrides or {}).items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigurationError(
                    f"price override names must be non-empty strings, got {name!r}"
                )
            if not isinstance(price, ModelPrice):
                raise ConfigurationError(
                    f"price override for {name!r} must be a ModelPrice, "
                    f"got {type(price).__name__}; "
                    "parse policy values with parse_price_override()"
                )
            if price.currency != self.currency:
                raise ConfigurationError(
                    f"price override for {name!r} is in {price.currency}, but the price book is "
                    f"in {self.currency}"
                )
            key = name.strip().lower()
            if "*" in key or "?" in key:
                self._patterns.append((key, price))
            else:
                self._exact[key] = price
        self._patterns.sort(key=lambda item: len(item[0].replace("*", "")), reverse=True)
        self._cache: dict[
            tuple[str, str | None, tuple[tuple[str, str], ...], str], ModelPrice | None
        ] = {}
        self.fallback_model = fallback_model
        if fallback_model is not None and self._resolve(fallback_model, None, None) is None:
            raise ConfigurationError(
                f"pricing fallback model {fallback_model!r} has no price itself; give it a price "
                "override or name a model the price book knows"
            )

    # -- resolution -------------------------------------------------------------------

    def _override(self, model: str, provider: str | None) -> ModelPrice | None:
        key = model.strip().lower()
        candidates = [key]
        if provider:
            candidates.insert(0, f"{provider.lower()}/{key}")
        if "/" in key:
            candidates.append(key.split("/", 1)[1])
        for name in candidates:
            if name in self._exact:
                return self._exact[name]
        for pattern, price in self._patterns:
            if any(fnmatch.fnmatchcase(name, pattern) for name in candidates):
                return price
        return None

    def _resolve(
        self, model: str, provider: str | None, context: Mapping[str, str] | None
    ) -> ModelPrice | None:
        found = self._override(model, provider)
        if found is not None:
            return found
        if self.currency != "USD":
            return None
        now = self._clock()
        ctx = tuple(sorted(context.items())) if context else ()
        cache_key = (
            model.strip().lower(),
            provider.lower() if provider else None,
            ctx,
            now.date().isoformat(),
        )
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        price = catalog.lookup(model, provider, at=now, context=context)
        self._cache[cache_key] = price
        return price

    def price(
        self, model: str, provider: str | None = None, *, context: Mapping[str, str] | None = None
    ) -> ModelPrice:
        """
        The rate card that prices ``model`` (see the module docstring for the order).

        ``context`` selects a provider price variant such as ``{"service_tier": "priority"}``
        or ``{"processing": "batch"}``.

        Raises:
            UnpricedModelError: no override, no bundled price, no fallback, and unpriced
                models are not allowed.
        """
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        found = self._resolve(model, provider, context)
        if found is not None:
            return found
        if self.fallback_model is not None:
            fallback = self._resolve(self.fallback_model, None, context)
            assert fallback is not None  # checked in __init__
            return _replace_source(fallback, f"fallback for unpriced {model!r}: {fallback.source}")
        if self.allow_unpriced:
            return ModelPrice(
                model=model,
                provider=provider or "unknown",
                currency=self.currency,
                input_per_mtok=Decimal(0),
                output_per_mtok=Decimal(0),
                source="unpriced: allowed by policy (fail open)",
            )
        raise UnpricedModelError(
            scope=f"model:{model}",
            dimension="cost",
            limit=None,
            spent=None,
            held=None,
            requested=model,
            reason="unpriced",
        )

    # -- arithmetic ---------------------------------------------------------------------

    def worst_case_cost(
        self,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        provider: str | None = None,
        cache_write: CacheWrite = "any",
        context: Mapping[str, str] | None = None,
    ) -> Decimal:
        """
        The most a call can cost: the amount to hold before it starts.

        ``input_tokens`` must be an upper bound of what the provider will bill (the
        :class:`~execbudget.pricing.TokenCounter` count) and ``max_output_tokens`` the
        ``max_tokens`` actually sent. The result covers any billed usage with at most that
        many input tokens and output tokens, however they split into:

        * **tiers**: the tier is picked by total input tokens (cliff rule: the whole call at
          the tier's rates; output never moves a call up a tier). The real input may be
          below the bound, so the maximum over every tier the bound can reach is taken;
        * **cache**: every input token at the dearest of input, cache-read and cache-write
          rates. ``cache_write`` narrows this when the request cannot write the cache:
          ``"none"`` (no ``cache_control`` anywhere), ``"5m"`` or ``"1h"`` (the longest
          lifetime requested). The default ``"any"`` is safe for every request;
        * **reasoning**: reasoning tokens count inside ``max_tokens`` (OpenAI
          ``max_completion_tokens``, Anthropic ``max_tokens`` with thinking), so every output
          token is priced at the dearer of the output and reasoning rates;
        * a fixed **per-request** fee, if the model has one.

        Not covered (listed in ``ModelPrice.unmodelled``): server-side tools billed per use
        (web search) and separate audio/image token rates.
        """
        _check_tokens("input_tokens", input_tokens)
        _check_tokens("max_output_tokens", max_output_tokens)
        mode = _check_mode(cache_write)
        price = self.price(model, provider, context=context)
        return worst_case_for(price, input_tokens, max_output_tokens, mode)

    def cost(
        self,
        model: str,
        usage: Usage,
        provider: str | None = None,
        *,
        context: Mapping[str, str] | None = None,
    ) -> Decimal:
        """The exact cost of reported usage (what to commit when the call settles)."""
        if not isinstance(usage, Usage):
            raise ConfigurationError(f"usage must be a Usage, got {type(usage).__name__}")
        return cost_for(self.price(model, provider, context=context), usage)

    def max_affordable_output(
        self,
        model: str,
        *,
        input_tokens: int,
        budget: Decimal,
        provider: str | None = None,
        cache_write: CacheWrite = "any",
        context: Mapping[str, str] | None = None,
    ) -> int:
        """
        The largest ``max_tokens`` whose worst case fits in ``budget``.

        Exact: ``worst_case_cost(.., max_output_tokens=n) <= budget`` and ``n + 1`` does not
        fit. 0 if the input alone does not fit (the caller denies, or applies its floor).
        :data:`UNBOUNDED_OUTPUT` if output is free and the input fits.
        """
        _check_tokens("input_tokens", input_tokens)
        if not isinstance(budget, Decimal) or not budget.is_finite():
            raise ConfigurationError(f"budget must be a finite Decimal, got {budget!r}")
        mode = _check_mode(cache_write)
        price = self.price(model, provider, context=context)
        return max_output_for(price, input_tokens, budget, mode)


def _check_mode(cache_write: str) -> CacheWrite:
    if cache_write not in _CACHE_WRITE_MODES:
        raise ConfigurationError(
            f"cache_write must be one of {', '.join(_CACHE_WRITE_MODES)}, got {cache_write!r}"
        )
    return cache_write  # type: ignore[return-value]


def _replace_source(price: ModelPrice, source: str) -> ModelPrice:
    from dataclasses import replace

    return replace(price, source=source)


#: The rates of one tier that the arithmetic below reads, resolved once per rate card:
#: ``(threshold, worst input rate by cache_write mode, worst output rate, billed rates)``
#: where the billed rates are input, cache read, 5-minute write, 1-hour write, output and
#: reasoning, with every ``None`` replaced by the rate it falls back to.
_Level = tuple[int, dict[str, Decimal], Decimal, tuple[Decimal, ...]]
_levels_cache: dict[int, tuple[ModelPrice, tuple[_Level, ...]]] = {}


def _levels(price: ModelPrice) -> tuple[_Level, ...]:
    """
    The resolved tiers of ``price``, computed once per rate card (pure, cached).

    Keyed by identity, like the tokenizer weights: hashing a rate card of Decimals costs
    more than the arithmetic. The entry keeps the card alive so its id is not reused.
    """
    entry = _levels_cache.get(id(price))
    if entry is not None and entry[0] is price:
        return entry[1]
    levels: list[_Level] = []
    for level in price.levels():
        inputs = level.input_per_mtok
        read = level.cache_read_per_mtok if level.cache_read_per_mtok is not None else inputs
        write = level.cache_write_per_mtok if level.cache_write_per_mtok is not None else inputs
        write_1h = (
            level.cache_write_1h_per_mtok if level.cache_write_1h_per_mtok is not None else write
        )
        output = level.output_per_mtok
        reasoning = level.reasoning_per_mtok if level.reasoning_per_mtok is not None else output
        worst_in = {mode: _worst_input_rate(level, mode) for mode in _CACHE_WRITE_MODES}
        billed = (inputs, read, write, write_1h, output, reasoning)
        levels.append((level.threshold, worst_in, _worst_output_rate(level), billed))
    if len(_levels_cache) >= 4096:
        _levels_cache.clear()
    _levels_cache[id(price)] = (price, tuple(levels))
    return tuple(levels)


def worst_case_for(
    price: ModelPrice, input_tokens: int, max_output_tokens: int, cache_write: CacheWrite = "any"
) -> Decimal:
    """:meth:`PriceBook.worst_case_cost` for a given rate card (pure)."""
    # Every tier the input can reach (see ModelPrice.reachable_levels); the operations
    # are those of ``localcontext(_EXACT)`` arithmetic, called on the context directly.
    ctx = _ARITH
    worst = Decimal(0)
    for index, (threshold, worst_in, out_rate, _) in enumerate(_levels(price)):
        if index and not input_tokens > threshold:
            break
        amount = ctx.divide(
            ctx.add(
                ctx.multiply(input_tokens, worst_in[cache_write]),
                ctx.multiply(max_output_tokens, out_rate),
            ),
            _MTOK,
        )
        worst = max(worst, amount)
    return ctx.plus(ctx.add(worst, price.per_request))


def cost_for(price: ModelPrice, usage: Usage) -> Decimal:
    """:meth:`PriceBook.cost` for a given rate card (pure)."""
    levels = _levels(price)
    rates = levels[0][3]
    for threshold, _, _, billed in levels[1:]:  # the tier the input lands in (cliff rule)
        if usage.input_tokens > threshold:
            rates = billed
        else:
            break
    input_rate, read_rate, write_rate, write_1h_rate, output_rate, reasoning_rate = rates
    plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
    ctx, mul, add = _ARITH, _ARITH.multiply, _ARITH.add
    # Every term, zero or not, as before: a zero term still sets the result's exponent.
    total = add(mul(plain_input, input_rate), mul(usage.cache_read_tokens, read_rate))
    total = add(total, mul(write_5m, write_rate))
    total = add(total, mul(usage.cache_write_1h_tokens, write_1h_rate))
    total = add(total, mul(usage.output_tokens - usage.reasoning_tokens, output_rate))
    total = add(total, mul(usage.reasoning_tokens, reasoning_rate))
    return ctx.plus(ctx.add(ctx.divide(total, _MTOK), price.per_request))


#: One tier's billed rates in integers (see ``cost_units_for``): ``(threshold, denominator,
#: numerators)``, the numerators in the order of ``_Level``'s billed rates plus the
#: per-request fee last.
_UnitLevel = tuple[int, int, tuple[int, ...]]
#: Rates whose integer numerators or common denominator pass this take the Decimal path:
#: a token count (< 2**63, 19 digits) times such a rate stays within the 80 digits that
#: ``cost_for`` computes exactly, so both paths agree (an override may have any digits).
_EXACT_BOUND: Final = 10**40
_unit_levels_cache: dict[int, tuple[ModelPrice, tuple[_UnitLevel, ...] | None]] = {}


def _unit_levels(price: ModelPrice) -> tuple[_UnitLevel, ...] | None:
    """
    Each tier's billed rates as nano-units per token over one common denominator, so a
    cost is a sum of integer products and one ceiling division; None if a rate is not a
    finite number (``cost_units_for`` then takes the Decimal path). Cached like ``_levels``.
    """
    entry = _unit_levels_cache.get(id(price))
    if entry is not None and entry[0] is price:
        return entry[1]
    levels: list[_UnitLevel] | None = []
    try:
        fee = Fraction(price.per_request) * UNITS_PER_MONEY
        for threshold, _, _, billed in _levels(price):
            # a rate per million tokens, in nano-units per token: rate * 1e9 / 1e6
            rates = [Fraction(rate) * 1000 for rate in billed] + [fee]
            denominator = math.lcm(*(rate.denominator for rate in rates))
            numerators = tuple(int(rate * denominator) for rate in rates)
            if denominator > _EXACT_BOUND or max(map(abs, numerators)) > _EXACT_BOUND:
                # More digits than ``cost_for``'s context keeps exactly: the hold
                # (``worst_case_for``) is rounded there, so the settlement must be too.
                levels = None
                break
            assert levels is not None
            levels.append((threshold, denominator, numerators))
    except (ValueError, OverflowError):  # NaN or an infinity: not for integers
        levels = None
    if len(_unit_levels_cache) >= 4096:
        _unit_levels_cache.clear()
    result = None if levels is None else tuple(levels)
    _unit_levels_cache[id(price)] = (price, result)
    return result


def cost_units_for(price: ModelPrice, usage: Usage) -> int:
    """
    ``money_to_units(cost_for(price, usage))``, computed in integers: the same exact cost
    rounded up to a nano-unit, without Decimal arithmetic (every settled call pays it).
    """
    levels = _unit_levels(price)
    if levels is None:
        return money_to_units(cost_for(price, usage))
    _, denominator, rates = levels[0]
    for threshold, level_denominator, level_rates in levels[1:]:  # cost_for's cliff rule
        if usage.input_tokens > threshold:
            denominator, rates = level_denominator, level_rates
        else:
            break
    input_rate, read_rate, write_rate, write_1h_rate, output_rate, reasoning_rate, fee = rates
    read, write, write_1h = (
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )
    reasoning = usage.reasoning_tokens
    total = (
        (usage.input_tokens - read - write) * input_rate
        + read * read_rate
        + (write - write_1h) * write_rate
        + write_1h * write_1h_rate
        + (usage.output_tokens - reasoning) * output_rate
        + reasoning * reasoning_rate
        + fee
    )
    units = -(-total // denominator)  # rounded up: a charge is never below the money
    if 0 <= units <= _MAX_UNITS:
        return units
    return check_units(units, what="money")


def max_output_for(
    price: ModelPrice, input_tokens: int, budget: Decimal, cache_write: CacheWrite = "any"
) -> int:
    """:meth:`PriceBook.max_affordable_output` for a given rate card (pure)."""
    ctx = _ARITH
    best: int | None = None
    spendable = ctx.multiply(ctx.subtract(budget, price.per_request), _MTOK)
    for index, (threshold, worst_in, out_rate, _) in enumerate(_levels(price)):
        if index and not input_tokens > threshold:
            break
        room = ctx.subtract(spendable, ctx.multiply(input_tokens, worst_in[cache_write]))
        if room < 0:
            return 0
        if out_rate == 0:
            continue
        n = int(ctx.divide_int(room, out_rate))
        best = n if best is None else min(best, n)
    if best is None:
        return UNBOUNDED_OUTPUT
    # Belt and braces against any rounding surprise: settle on the exact boundary.
    while best > 0 and worst_case_for(price, input_tokens, best, cache_write) > budget:
        best -= 1
    while worst_case_for(price, input_tokens, best + 1, cache_write) <= budget:
        best += 1
    return best
