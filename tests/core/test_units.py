from __future__ import annotations

from decimal import Decimal

import pytest

from execbudget.errors import ConfigurationError
from execbudget.units import (
    Dimension,
    display,
    money_text,
    money_to_units,
    parse_count,
    parse_duration,
    parse_limit,
    parse_money,
    units_to_money,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.50 USD", Decimal("0.50")),
        ("$0.50", Decimal("0.50")),
        ("12", Decimal(12)),
        (Decimal("1.25"), Decimal("1.25")),
        (3, Decimal(3)),
        ("1,000.5 usd", Decimal("1000.5")),
    ],
)
def test_money(text: object, expected: Decimal) -> None:
    assert parse_money(text) == expected


@pytest.mark.parametrize(
    "bad", ["-1 USD", "NaN", "inf USD", "1 EUR", "fifty", float("nan"), float("inf"), True, [1]]
)
def test_bad_money_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_money(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("200k", 200_000), ("1.5M", 1_500_000), ("10_000", 10_000), (30, 30), ("2b", 2 * 10**9)],
)
def test_counts(text: object, expected: int) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize("bad", ["1.5", "-3", "1.2345k", "ten", 2.5, True, float("inf"), "9e99"])
def test_bad_counts_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_count(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("500ms", Decimal("0.5")), ("2m", 120), ("1h", 3600), (45, 45), ("1.5", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == Decimal(str(seconds))


def test_money_units_round_up_so_holds_are_never_short() -> None:
    assert money_to_units(Decimal("0.0000000001")) == 1
    assert money_to_units(Decimal("1.5")) == 1_500_000_000
    assert parse_limit(Dimension.TIME, "1.0001ms") == 2
    assert display("cost", 1_500_000_000) == "1.5 USD"
    assert display("time", 1500) == "1.5s"
    assert display("tokens", 12345) == "12,345"


@pytest.mark.parametrize(
    "units",
    [0, 1, 9, 10, 999_999_999, 1_000_000_000, 1_000_000_001, 1_500_000_000, 10**10, 10**12 + 7,
     123_456_789_012, 2**53 + 1, 2**62, -1, -1_500_000_000],
)  # fmt: skip
def test_money_text_is_the_decimal_text_of_the_units(units: int) -> None:
    assert money_text(units) == f"{units_to_money(units):f}"


def test_money_text_over_a_sweep() -> None:
    for units in range(0, 3_000_000_000, 7_777_777):
        assert money_text(units) == f"{units_to_money(units):f}", units
