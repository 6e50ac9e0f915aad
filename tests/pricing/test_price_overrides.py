"""Parsing policy-style prices: every accepted form, and errors that name the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from execbudget.errors import ConfigurationError
from execbudget.pricing import (
    ModelPrice,
    PriceTier,
    parse_price_override,
    parse_price_overrides,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("2.50 USD/Mtok", Decimal("2.50"), "USD"),
        ("2.50 usd/MTok", Decimal("2.50"), "USD"),
        ("$2.50/Mtok", Decimal("2.50"), "USD"),
        ("$ 2.50 / mtok", Decimal("2.50"), "USD"),
        ("0.0025 USD/Ktok", Decimal("2.5"), "USD"),
        ("2.5e-6 USD/tok", Decimal("2.5"), "USD"),
        ("0.000001 EUR/token", Decimal("1"), "EUR"),
        ("3 USD/Mtokens", Decimal("3"), "USD"),
        ("2.5", Decimal("2.5"), None),
        (".5 USD/Mtok", Decimal("0.5"), "USD"),
        (2, Decimal(2), None),
        (2.5, Decimal("2.5"), None),
        (0.1, Decimal("0.1"), None),
        (Decimal("1.25"), Decimal("1.25"), None),
    ],
)
def test_rate_forms(text: Any, amount: Decimal, currency: str | None) -> None:
    parsed, cur = parse_rate(text)
    assert parsed == amount
    assert isinstance(parsed, Decimal)
    assert cur == currency


def test_full_override() -> None:
    price = parse_price_override(
        "my-model",
        {
            "input": "2.50 USD/Mtok",
            "output": "10 USD/Mtok",
            "cache_read": "1.25 USD/Mtok",
            "cache_write": "3 USD/Mtok",
            "cache_write_1h": "5 USD/Mtok",
            "reasoning": "12 USD/Mtok",
            "per_request": "0.001 USD",
            "context_window": 128_000,
            "tiers": [{"above": 100_000, "input": "5 USD/Mtok", "output": 20}],
        },
    )
    assert price == ModelPrice(
        model="my-model",
        provider="custom",
        currency="USD",
        input_per_mtok=Decimal("2.50"),
        output_per_mtok=Decimal("10"),
        cache_read_per_mtok=Decimal("1.25"),
        cache_write_per_mtok=Decimal("3"),
        cache_write_1h_per_mtok=Decimal("5"),
        reasoning_per_mtok=Decimal("12"),
        per_request=Decimal("0.001"),
        context_window=128_000,
        tiers=(
            PriceTier(
                threshold=100_000,
                input_per_mtok=Decimal("5"),
                output_per_mtok=Decimal("20"),
                # tier fields left out inherit the base rates
                cache_read_per_mtok=Decimal("1.25"),
                cache_write_per_mtok=Decimal("3"),
                cache_write_1h_per_mtok=Decimal("5"),
                reasoning_per_mtok=Decimal("12"),
            ),
        ),
        source="policy override",
    )


def test_minimal_override_defaults() -> None:
    price = parse_price_override("m", {"input": 1, "output": 0})
    assert price.cache_read_per_mtok is None
    assert price.reasoning_per_mtok is None
    assert price.tiers == ()
    assert price.currency == "USD"
    assert price.source == "policy override"


def test_other_currency() -> None:
    price = parse_price_override("m", {"input": "1 EUR/Mtok", "output": "2 EUR/Mtok"})
    assert price.currency == "EUR"
    price = parse_price_override("m", {"currency": "eur", "input": 1, "output": 2})
    assert price.currency == "EUR"


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"output": 1}, "input", "missing"),
        ({"input": 1}, "output", "missing"),
        ({"input": "2.5 USD/Mtok", "output": "ten"}, "output", "cannot read"),
        ({"input": "2.5 USD/parsec", "output": 1}, "input", "unknown unit"),
        ({"input": -1, "output": 1}, "input", ">= 0"),
        ({"input": "-1 USD/Mtok", "output": 1}, "input", "cannot read"),
        ({"input": True, "output": 1}, "input", "expected an amount"),
        ({"input": [1], "output": 1}, "input", "expected an amount"),
        ({"input": float("nan"), "output": 1}, "input", "finite"),
        ({"input": 1, "output": 1, "cache_reed": 1}, "cache_reed", "unknown field"),
        ({"input": "1 USD/Mtok", "output": "1 EUR/Mtok"}, "output", "currency EUR"),
        ({"input": "$1 EUR/Mtok", "output": 1}, "input", "both $ and EUR"),
        ({"input": 1, "output": 1, "currency": "dollars"}, "currency", "ISO code"),
        ({"input": "1 USD/request", "output": 1}, "input", "per tok, Ktok or Mtok"),
        ({"input": 1, "output": 1, "per_request": "1 USD/Mtok"}, "per_request", "per call"),
        ({"input": 1, "output": 1, "context_window": 0}, "context_window", "positive int"),
        ({"input": 1, "output": 1, "provider": ""}, "provider", "non-empty"),
        ({"input": 1, "output": 1, "tiers": "high"}, "tiers", "list of tiers"),
        ({"input": 1, "output": 1, "tiers": [{"input": 2}]}, "tiers[0].above", "threshold"),
        ({"input": 1, "output": 1, "tiers": [{"above": -5}]}, "tiers[0].above", "threshold"),
        (
            {"input": 1, "output": 1, "tiers": [{"above": 10}, {"above": 10}]},
            "tiers[1].above",
            "increasing",
        ),
        (
            {"input": 1, "output": 1, "tiers": [{"above": 10, "outptu": 3}]},
            "tiers[0].outptu",
            "unknown field",
        ),
        ({"input": 1, "output": 1, "tiers": [{"above": 10, "output": "x"}]}, "tiers[0].output", ""),
        ({"input": 1, "output": 1, "tiers": [5]}, "tiers[0]", "mapping"),
    ],
)
def test_errors_name_the_field(spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_price_override("acme-llm", spec)
    message = str(info.value)
    assert "'acme-llm'" in message
    assert f"field '{field}'" in message
    assert fragment in message


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        parse_price_override("m", "2.5 USD/Mtok")  # type: ignore[arg-type]


def test_parse_many() -> None:
    prices = parse_price_overrides(
        {"a": {"input": 1, "output": 2}, "b-*": {"input": "3 USD/Mtok", "output": "4 USD/Mtok"}}
    )
    assert set(prices) == {"a", "b-*"}
    assert prices["b-*"].output_per_mtok == Decimal(4)
    with pytest.raises(ConfigurationError, match="mapping of model name"):
        parse_price_overrides([("a", {})])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="non-empty strings"):
        parse_price_overrides({"": {"input": 1, "output": 1}})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_per_mtok": 1.0}, "must be a Decimal"),
        ({"input_per_mtok": Decimal(-1)}, ">= 0"),
        ({"input_per_mtok": Decimal("Infinity")}, "finite"),
        ({"currency": "usdollar"}, "ISO code"),
        ({"model": ""}, "non-empty"),
        ({"context_window": 0}, "context_window"),
        ({"tiers": [1]}, "tuple of PriceTier"),
    ],
)
def test_model_price_validation(kwargs: dict[str, Any], fragment: str) -> None:
    base: dict[str, Any] = {
        "model": "m",
        "provider": "p",
        "input_per_mtok": Decimal(1),
        "output_per_mtok": Decimal(1),
        "source": "test",
    }
    with pytest.raises(ConfigurationError, match=fragment):
        ModelPrice(**{**base, **kwargs})


def test_tiers_must_increase() -> None:
    tier = PriceTier(threshold=10, input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    with pytest.raises(ConfigurationError, match="strictly increasing"):
        ModelPrice(
            model="m",
            provider="p",
            input_per_mtok=Decimal(1),
            output_per_mtok=Decimal(1),
            tiers=(tier, tier),
            source="t",
        )
    with pytest.raises(ConfigurationError, match="threshold"):
        PriceTier(threshold=-1, input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
