"""
Rate cards: what one model charges per million tokens, with its context-length tiers.

A :class:`ModelPrice` is a plain, immutable value: it knows nothing about where it came from
except the ``source`` string, so a price from ``genai-prices``, from a policy override or
from a test can all be reasoned about the same way. Arithmetic on it lives in
:mod:`execbudget.pricing.book`.

Tier semantics (the "cliff" rule used by Anthropic, Google, OpenAI and ``genai-prices``):
a tier with ``threshold`` T applies to the **whole call**, every token type, input and
output, when the call's **total input tokens** (cached tokens included) are strictly
greater than T. Output tokens never move a call into a higher tier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from ..errors import ConfigurationError

#: Rates are quoted per this many tokens ("per Mtok").
PER_MTOK: Final = 1_000_000

_RATE_FIELDS: Final = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "reasoning_per_mtok",
)


def _check_rate(owner: str, name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Decimal):
        raise ConfigurationError(
            f"{owner}: {name} must be a Decimal amount, got {type(value).__name__} {value!r}"
        )
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{owner}: {name} must be a finite amount >= 0, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTier:
    """
    The rates that apply to a whole call once its input exceeds ``threshold`` tokens.

    A ``None`` rate means the same as on :class:`ModelPrice`: cache reads and writes billed
    as plain input, 1-hour cache writes billed as (5-minute) cache writes, reasoning billed
    as output.
    """

    threshold: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise ConfigurationError(
                f"price tier: threshold must be an int, got {self.threshold!r}"
            )
        if self.threshold < 0:
            raise ConfigurationError(f"price tier: threshold must be >= 0, got {self.threshold}")
        owner = f"price tier above {self.threshold} input tokens"
        for name in _RATE_FIELDS:
            _check_rate(owner, name, getattr(self, name), optional=name not in _REQUIRED)


_REQUIRED: Final = frozenset({"input_per_mtok", "output_per_mtok"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """
    The rate card of one model at one provider, in ``currency`` per million tokens.

    The top-level rates are the base tier (calls whose input is at most the first tier's
    threshold). ``tiers`` are sorted by strictly increasing ``threshold``; empty if the
    model has flat pricing.

    Attributes:
        model: the model id the price belongs to (the canonical id, e.g. ``gpt-4o`` for
            ``gpt-4o-2024-08-06``).
        provider: the provider id (``openai``, ``anthropic``, ... or ``custom``).
        currency: ISO code of the money unit; ``genai-prices`` is always ``USD``.
        input_per_mtok: uncached input tokens.
        output_per_mtok: output tokens (visible and reasoning, unless ``reasoning_per_mtok``).
        cache_read_per_mtok: input tokens read from the prompt cache (``None``: input rate).
        cache_write_per_mtok: input tokens written to the prompt cache with the default
            (5-minute) lifetime (``None``: input rate).
        cache_write_1h_per_mtok: input tokens written with the 1-hour lifetime (``None``:
            the 5-minute cache-write rate).
        reasoning_per_mtok: reasoning ("thinking") output tokens (``None``: billed as
            output, which is the rule at OpenAI, Anthropic and Google).
        per_request: a fixed fee per call, in ``currency`` (0 for almost every model).
        tiers: context-length tiers (see the module docstring for the cliff rule).
        context_window: the model's maximum input tokens, when known.
        source: where the price came from, e.g. ``genai-prices 0.2.3: openai/gpt-4o`` or
            ``policy override``; shown by ``execbudget prices`` and kept in audit records.
        unmodelled: price units of the source that this rate card does not charge
            (web searches, audio or image token rates, ...), so a reader can see what a
            hold does not cover.
    """

    model: str
    provider: str
    currency: str = "USD"
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None
    per_request: Decimal = Decimal(0)
    tiers: tuple[PriceTier, ...] = ()
    context_window: int | None = None
    source: str
    unmodelled: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        owner = f"price of {self.model!r}"
        if not isinstance(self.model, str) or not self.model:
            raise ConfigurationError(
                f"model price: model must be a non-empty string, got {self.model!r}"
            )
        if (
            not isinstance(self.currency, str)
            or len(self.currency) != 3
            or not self.currency.isalpha()
        ):
            raise ConfigurationError(
                f"{owner}: currency must be an ISO code like 'USD', got {self.currency!r}"
            )
        for name in _RATE_FIELDS:
            _check_rate(owner, name, getattr(self, name), optional=name not in _REQUIRED)
        _check_rate(owner, "per_request", self.per_request, optional=False)
        if not isinstance(self.tiers, tuple) or not all(
            isinstance(t, PriceTier) for t in self.tiers
        ):
            raise ConfigurationError(f"{owner}: tiers must be a tuple of PriceTier")
        last = -1
        for tier in self.tiers:
            if tier.threshold <= last:
                raise ConfigurationError(
                    f"{owner}: tier thresholds must be strictly increasing, got "
                    f"{[t.threshold for t in self.tiers]}"
                )
            last = tier.threshold
        if self.context_window is not None and (
            isinstance(self.context_window, bool)
            or not isinstance(self.context_window, int)
            or self.context_window <= 0
        ):
            raise ConfigurationError(f"{owner}: context_window must be a positive int or None")

    @property
    def base(self) -> PriceTier:
        """The base-tier rates as a :class:`PriceTier` with threshold 0."""
        return PriceTier(
            threshold=0,
            input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok,
            cache_read_per_mtok=self.cache_read_per_mtok,
            cache_write_per_mtok=self.cache_write_per_mtok,
            cache_write_1h_per_mtok=self.cache_write_1h_per_mtok,
            reasoning_per_mtok=self.reasoning_per_mtok,
        )

    def levels(self) -> tuple[PriceTier, ...]:
        """The base tier followed by every context-length tier, in threshold order."""
        return (self.base, *self.tiers)

    def level_for(self, input_tokens: int) -> PriceTier:
        """The tier that prices a call with ``input_tokens`` total input tokens."""
        chosen = self.base
        for tier in self.tiers:
            if input_tokens > tier.threshold:
                chosen = tier
            else:
                break
        return chosen

    def reachable_levels(self, max_input_tokens: int) -> tuple[PriceTier, ...]:
        """
        Every tier a call with *at most* ``max_input_tokens`` input tokens could land in.

        A hold is computed from an upper bound of the input, and the real input may be
        smaller, so the hold must cover every tier at or below the one the bound reaches
        (they are normally cheaper, but nothing in a price file promises that).
        """
        return (self.base, *(t for t in self.tiers if max_input_tokens > t.threshold))

    @property
    def is_free(self) -> bool:
        """True when nothing about a call costs money (an allowed unpriced model)."""
        return (
            all(
                (getattr(level, name) or 0) == 0 for level in self.levels() for name in _RATE_FIELDS
            )
            and self.per_request == 0
        )
