"""
Rate cards as floats, and where they come from.

The runtime prices in ``Decimal``; the modeler prices millions of simulated calls at once,
so it converts each rate card once into float64 dollars **per token** with its context
tiers (cliff rule: a tier prices the whole call once the call's total input exceeds its
threshold). Sources, in order: the node's own ``price:``, the graph's ``prices:`` for the
model name, then a :class:`Pricer` — by default the project's price book
(:class:`execbudget.pricing.PriceBook`), imported lazily so the modeler works with
explicit prices alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigurationError
from ._arrays import FloatArray, IntArray
from .spec import PriceSpec

_PER_MTOK = 1e6


@dataclass(frozen=True, slots=True)
class Rates:
    """One price level in currency per token (cache rates already defaulted to input)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    per_request: float = 0.0

    @property
    def hold_input(self) -> float:
        """The input rate a hold must assume: the dearest of input, cache read and write."""
        return max(self.input, self.cache_read, self.cache_write)


@dataclass(frozen=True, slots=True)
class RateCard:
    """A model's rates: ``levels[0]`` is the base, ``levels[i]`` applies above
    ``thresholds[i-1]`` input tokens."""

    levels: tuple[Rates, ...]
    thresholds: tuple[float, ...]
    source: str
    currency: str = "USD"

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.thresholds) + 1:
            raise ConfigurationError("a rate card needs one more level than thresholds")

    def level_of(self, input_tokens: FloatArray) -> IntArray:
        """The price level of each call from its total input tokens (cliff rule)."""
        if not self.thresholds:
            return np.zeros(np.shape(input_tokens), dtype=np.int64)
        return np.searchsorted(np.asarray(self.thresholds), input_tokens, side="left").astype(
            np.int64
        )

    def column(self, name: str) -> FloatArray:
        """One rate (``input``, ``output``, ``cache_read``, ...) per level, as an array."""
        return np.array([getattr(level, name) for level in self.levels])

    @property
    def segments(self) -> list[tuple[float, float]]:
        """The input-token interval ``(lo, hi]`` of each level."""
        edges = [-np.inf, *self.thresholds, np.inf]
        return list(pairwise(edges))

    def top(self) -> Rates:
        """The dearest rate of each kind over all levels (for guaranteed worst cases)."""
        return Rates(
            input=max(lv.input for lv in self.levels),
            output=max(lv.output for lv in self.levels),
            cache_read=max(lv.cache_read for lv in self.levels),
            cache_write=max(lv.cache_write for lv in self.levels),
            per_request=max(lv.per_request for lv in self.levels),
        )


class Pricer(Protocol):
    """Anything that turns a model name into a :class:`RateCard`."""

    def rate_card(self, model: str, provider: str | None) -> RateCard: ...


def _level(inp: float, out: float, cr: float | None, cw: float | None, fee: float = 0.0) -> Rates:
    return Rates(
        input=inp / _PER_MTOK,
        output=out / _PER_MTOK,
        cache_read=(inp if cr is None else cr) / _PER_MTOK,
        cache_write=(inp if cw is None else cw) / _PER_MTOK,
        per_request=fee,
    )


def card_from_spec(spec: PriceSpec, source: str, currency: str = "USD") -> RateCard:
    """A rate card from a graph's ``price:`` block."""
    levels = [
        _level(
            spec.input_per_mtok,
            spec.output_per_mtok,
            spec.cache_read_per_mtok,
            spec.cache_write_per_mtok,
            spec.per_request,
        )
    ]
    thresholds: list[float] = []
    for tier in sorted(spec.tiers, key=lambda t: t.above_input_tokens):
        levels.append(
            _level(
                tier.input_per_mtok,
                tier.output_per_mtok,
                tier.cache_read_per_mtok,
                tier.cache_write_per_mtok,
                spec.per_request,
            )
        )
        thresholds.append(float(tier.above_input_tokens))
    if any(b <= a for a, b in pairwise(thresholds)):
        raise ConfigurationError(f"{source}: tier thresholds must be distinct")
    return RateCard(tuple(levels), tuple(thresholds), spec.source or source, currency)


def card_from_model_price(price: Any) -> RateCard:
    """A rate card from an :class:`execbudget.pricing.ModelPrice` (Decimal → float)."""

    def f(v: Any) -> float | None:
        return None if v is None else float(v)

    fee = float(price.per_request)
    levels = []
    thresholds: list[float] = []
    for level in price.levels():
        inp = float(level.input_per_mtok)
        out = max(float(level.output_per_mtok), f(level.reasoning_per_mtok) or 0.0)
        levels.append(
            _level(inp, out, f(level.cache_read_per_mtok), f(level.cache_write_per_mtok), fee)
        )
        if level.threshold:
            thresholds.append(float(level.threshold))
    return RateCard(tuple(levels), tuple(thresholds), f"price book: {price.source}", price.currency)


class BookPricer:
    """The project's price book (``execbudget.pricing.PriceBook``), loaded on first use."""

    def __init__(self, book: Any | None = None) -> None:
        self._book = book

    def rate_card(self, model: str, provider: str | None) -> RateCard:
        if self._book is None:
            try:
                from ..pricing import PriceBook
            except ImportError as exc:  # pragma: no cover - the pricing package ships with us
                raise ConfigurationError(
                    f"model {model!r} needs a price but the price book is not available "
                    f"({exc}); give price: on the node or prices: in the graph"
                ) from None
            self._book = PriceBook()
        return card_from_model_price(self._book.price(model, provider))


class StaticPricer:
    """Fixed rate cards by model name (tests, or prices kept outside the graph)."""

    def __init__(self, cards: Mapping[str, RateCard | PriceSpec]) -> None:
        self._cards = {
            k: v if isinstance(v, RateCard) else card_from_spec(v, f"static price of {k}")
            for k, v in cards.items()
        }

    def rate_card(self, model: str, provider: str | None) -> RateCard:
        try:
            return self._cards[model]
        except KeyError:
            raise ConfigurationError(f"no static price for model {model!r}") from None


__all__ = [
    "BookPricer",
    "Pricer",
    "RateCard",
    "Rates",
    "StaticPricer",
    "card_from_model_price",
    "card_from_spec",
]
