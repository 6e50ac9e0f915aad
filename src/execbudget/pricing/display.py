"""
Showing a rate card to a person (``execbudget prices MODEL``) or to a program (``--json``).

The point of the command is trust: before a budget denies or clamps a call, an operator
can see exactly which rates the book will charge, which tier applies when, and where each
price came from (bundled data and its version, a policy override, or a fallback).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..errors import ConfigurationError, UnpricedModelError
from .book import PriceBook, worst_case_for
from .rates import ModelPrice, PriceTier

#: The example call shown under the table: a typical chat turn.
EXAMPLE_INPUT_TOKENS = 1_000
EXAMPLE_OUTPUT_TOKENS = 1_000


def _fmt(value: Decimal | None) -> str:
    if value is None:
        return "—"
    text = format(value.normalize(), "f")
    return text


def _level_rows(price: ModelPrice) -> list[tuple[str, PriceTier]]:
    rows = []
    for index, level in enumerate(price.levels()):
        if index == 0:
            label = "all" if not price.tiers else f"≤ {price.tiers[0].threshold:,}"
        else:
            label = f"> {level.threshold:,}"
        rows.append((label, level))
    return rows


def describe_price(price: ModelPrice) -> Group:
    """A rich renderable: the rate table, its tiers, its fallbacks and its source."""
    table = Table(
        title=f"{price.provider}/{price.model}: {price.currency} per million tokens",
        title_justify="left",
    )
    table.add_column("input tokens")
    for header in ("input", "output", "cache read", "cache write", "cache write 1h", "reasoning"):
        table.add_column(header, justify="right")
    for label, level in _level_rows(price):
        table.add_row(
            label,
            _fmt(level.input_per_mtok),
            _fmt(level.output_per_mtok),
            _fmt(level.cache_read_per_mtok),
            _fmt(level.cache_write_per_mtok),
            _fmt(level.cache_write_1h_per_mtok),
            _fmt(level.reasoning_per_mtok),
        )
    notes = Text()
    notes.append("source: ", style="bold")
    notes.append(f"{price.source}\n")
    notes.append(
        "— means: cache read/write billed as input, 1h write as 5m write, reasoning as output.\n"
    )
    if price.tiers:
        notes.append(
            "Tiers apply to the whole call (every token type) when total input tokens exceed "
            "the threshold.\n"
        )
    if price.per_request:
        notes.append(f"per-request fee: {_fmt(price.per_request)} {price.currency}\n")
    if price.context_window:
        notes.append(f"context window: {price.context_window:,} tokens\n")
    example = worst_case_for(price, EXAMPLE_INPUT_TOKENS, EXAMPLE_OUTPUT_TOKENS)
    plain = worst_case_for(price, EXAMPLE_INPUT_TOKENS, EXAMPLE_OUTPUT_TOKENS, "none")
    notes.append(
        f"hold for {EXAMPLE_INPUT_TOKENS:,} input + {EXAMPLE_OUTPUT_TOKENS:,} max output tokens: "
        f"{_fmt(example)} {price.currency}"
        + (f" ({_fmt(plain)} if the request writes no cache)" if plain != example else "")
        + "\n"
    )
    if price.unmodelled:
        notes.append(
            "not charged by holds (priced per use or per modality): "
            f"{', '.join(price.unmodelled)}\n",
            style="yellow",
        )
    return Group(table, notes)


def price_to_dict(price: ModelPrice) -> dict[str, Any]:
    """The rate card as JSON-ready data (amounts as strings, never floats)."""

    def level(tier: PriceTier) -> dict[str, Any]:
        return {
            "input_per_mtok": _fmt(tier.input_per_mtok),
            "output_per_mtok": _fmt(tier.output_per_mtok),
            "cache_read_per_mtok": None
            if tier.cache_read_per_mtok is None
            else _fmt(tier.cache_read_per_mtok),
            "cache_write_per_mtok": None
            if tier.cache_write_per_mtok is None
            else _fmt(tier.cache_write_per_mtok),
            "cache_write_1h_per_mtok": None
            if tier.cache_write_1h_per_mtok is None
            else _fmt(tier.cache_write_1h_per_mtok),
            "reasoning_per_mtok": None
            if tier.reasoning_per_mtok is None
            else _fmt(tier.reasoning_per_mtok),
        }

    return {
        "model": price.model,
        "provider": price.provider,
        "currency": price.currency,
        **level(price.base),
        "per_request": _fmt(price.per_request),
        "tiers": [{"above_input_tokens": t.threshold, **level(t)} for t in price.tiers],
        "context_window": price.context_window,
        "source": price.source,
        "unmodelled": list(price.unmodelled),
        "example_worst_case": {
            "input_tokens": EXAMPLE_INPUT_TOKENS,
            "max_output_tokens": EXAMPLE_OUTPUT_TOKENS,
            "cost": _fmt(worst_case_for(price, EXAMPLE_INPUT_TOKENS, EXAMPLE_OUTPUT_TOKENS)),
        },
    }


def prices_command(
    model: str,
    provider: str | None,
    as_json: bool,
    *,
    book: PriceBook | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    ``execbudget prices MODEL [--provider P] [--json]``: print what the book charges.

    Exit codes: 0 priced, 1 no price (the book would deny the call), 2 bad input.
    ``book`` defaults to the bundled prices with no overrides; the CLI passes the book
    built from the policy when one is given.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        price = (book or PriceBook()).price(model, provider)
    except UnpricedModelError as exc:
        if as_json:
            out.write(
                json.dumps({"model": model, "provider": provider, "error": exc.to_dict()}) + "\n"
            )
        else:
            Console(file=err).print(f"[bold red]no price[/]: {exc}", highlight=False)
        return 1
    except ConfigurationError as exc:
        Console(file=err).print(f"[bold red]error[/]: {exc}", highlight=False)
        return 2
    if as_json:
        out.write(json.dumps(price_to_dict(price), indent=2) + "\n")
    else:
        Console(file=out).print(describe_price(price))
    return 0
