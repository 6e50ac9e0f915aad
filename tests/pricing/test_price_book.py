"""The price book: resolution, fail-closed denial, tiers, worst case and exact affordability."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execbudget.errors import ConfigurationError, UnpricedModelError
from execbudget.pricing import (
    UNBOUNDED_OUTPUT,
    ModelPrice,
    PriceBook,
    PriceTier,
    Usage,
    cost_for,
    cost_units_for,
    genai_prices_version,
    max_output_for,
    parse_price_override,
    worst_case_for,
)
from execbudget.pricing.catalog import bundled_snapshot
from execbudget.units import money_to_units

D = Decimal
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def fixed_clock(at: datetime = NOW) -> PriceBook:
    return PriceBook(clock=lambda: at)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return fixed_clock()


# -- resolution ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "provider", "model", "prov", "input_rate", "output_rate"),
    [
        ("gpt-4o", None, "gpt-4o", "openai", "2.5", "10"),
        ("gpt-4o-2024-08-06", None, "gpt-4o", "openai", "2.5", "10"),
        ("openai/gpt-4o", None, "gpt-4o", "openai", "2.5", "10"),
        ("GPT-4o", None, "gpt-4o", "openai", "2.5", "10"),
        ("gpt-4o", "openai", "gpt-4o", "openai", "2.5", "10"),
        ("gpt-4o", "azure", "gpt-4o", "azure", "2.5", "10"),
        ("openai/gpt-4o", "openrouter", "openai/gpt-4o", "openrouter", "2.5", "10"),
        ("openrouter/openai/gpt-4o", None, "openai/gpt-4o", "openrouter", "2.5", "10"),
        ("gpt-4o-mini", None, "gpt-4o-mini", "openai", "0.15", "0.6"),
        ("claude-sonnet-4-5", None, "claude-sonnet-4-5", "anthropic", "3", "15"),
        ("anthropic/claude-sonnet-4-5", None, "claude-sonnet-4-5", "anthropic", "3", "15"),
        ("claude-3-5-haiku-latest", None, "claude-3-5-haiku-latest", "anthropic", "0.8", "4"),
        ("claude-sonnet-4-20250514", None, "claude-sonnet-4-0", "anthropic", "3", "15"),
        ("claude-opus-4-1", None, "claude-opus-4-1", "anthropic", "15", "75"),
        ("text-embedding-3-small", "openai", "text-embedding-3-small", "openai", "0.02", "0"),
    ],
)
def test_known_models(
    book: PriceBook,
    ref: str,
    provider: str | None,
    model: str,
    prov: str,
    input_rate: str,
    output_rate: str,
) -> None:
    price = book.price(ref, provider)
    assert (price.model, price.provider) == (model, prov)
    assert price.input_per_mtok == D(input_rate)
    assert price.output_per_mtok == D(output_rate)
    assert price.currency == "USD"
    assert price.source == f"genai-prices {genai_prices_version()}: {prov}/{model}"


def test_anthropic_cache_rates(book: PriceBook) -> None:
    price = book.price("claude-sonnet-4-5")
    assert price.cache_read_per_mtok == D("0.3")
    assert price.cache_write_per_mtok == D("3.75")
    assert price.cache_write_1h_per_mtok == D("6")
    assert price.context_window == 200_000
    assert "web_searches_kcount" in price.unmodelled


def test_tiers_from_genai(book: PriceBook) -> None:
    price = book.price("claude-sonnet-4-5")
    assert price.tiers == (
        PriceTier(
            threshold=200_000,
            input_per_mtok=D(6),
            output_per_mtok=D("22.5"),
            cache_read_per_mtok=D("0.6"),
            cache_write_per_mtok=D("7.5"),
            cache_write_1h_per_mtok=D(12),
        ),
    )


def test_costmodel_tier_example(book: PriceBook) -> None:
    # costmodel.md §1.1: 250k input + 1k output on Sonnet 4.5 costs $1.5225 (cliff tier).
    usage = Usage(input_tokens=250_000, output_tokens=1_000)
    assert book.cost("claude-sonnet-4-5", usage) == D("1.5225")
    # exactly at the threshold is still the base tier (strictly greater moves up)
    at = Usage(input_tokens=200_000, output_tokens=1_000)
    assert book.cost("claude-sonnet-4-5", at) == D("0.615")
    # output never moves a call up a tier
    big_out = Usage(input_tokens=199_000, output_tokens=64_000)
    assert book.cost("claude-sonnet-4-5", big_out) == D("0.597") + D("0.96")


def test_unknown_model_denied(book: PriceBook) -> None:
    with pytest.raises(UnpricedModelError) as info:
        book.price("acme-llm-9000")
    err = info.value
    assert err.requested == "acme-llm-9000"
    assert err.dimension == "cost"
    assert "acme-llm-9000" in str(err) and "pricing.models" in str(err)
    assert err.to_dict()["reason"] == "unpriced"
    with pytest.raises(UnpricedModelError):
        book.worst_case_cost("acme-llm-9000", input_tokens=1, max_output_tokens=1)
    with pytest.raises(UnpricedModelError):
        book.cost("acme-llm-9000", Usage(input_tokens=1))
    with pytest.raises(UnpricedModelError):
        book.price("nonexistent-provider/gpt-4o-typo")


def test_override_prices_unknown_and_wins_over_bundled() -> None:
    overrides = {
        "acme-llm": parse_price_override("acme-llm", {"input": "1 USD/Mtok", "output": 2}),
        "gpt-4o": parse_price_override("gpt-4o", {"input": "9 USD/Mtok", "output": 9}),
    }
    book = PriceBook(overrides, clock=lambda: NOW)
    assert book.price("acme-llm").source == "policy override"
    assert book.price("ACME-LLM").input_per_mtok == D(1)
    assert book.price("gpt-4o").input_per_mtok == D(9)
    # the dated snapshot is a different name: bundled data still prices it
    assert book.price("gpt-4o-2024-08-06").input_per_mtok == D("2.5")


def test_override_name_forms() -> None:
    def p(rate: int) -> ModelPrice:
        return parse_price_override("x", {"input": rate, "output": rate})

    book = PriceBook(
        {"acme/foo": p(1), "bar": p(2), "ft:*": p(3), "ft:gpt-4o:*": p(4)}, clock=lambda: NOW
    )
    assert book.price("foo", provider="acme").input_per_mtok == 1
    assert book.price("acme/foo").input_per_mtok == 1
    assert book.price("someone/bar").input_per_mtok == 2
    assert book.price("ft:davinci-002:org::abc").input_per_mtok == 3
    assert book.price("ft:gpt-4o:org::abc").input_per_mtok == 4  # the longer pattern wins
    with pytest.raises(UnpricedModelError):
        book.price("foo")


def test_fallback_model() -> None:
    book = PriceBook(fallback_model="gpt-4o-mini", clock=lambda: NOW)
    price = book.price("acme-llm")
    assert price.input_per_mtok == D("0.15")
    assert price.source.startswith("fallback for unpriced 'acme-llm': genai-prices")
    assert book.price("gpt-4o").input_per_mtok == D("2.5")  # known models keep their price
    override = {"house": parse_price_override("house", {"input": 7, "output": 7})}
    book = PriceBook(override, fallback_model="house")
    assert book.price("whatever").input_per_mtok == 7


def test_fallback_must_be_priced() -> None:
    with pytest.raises(ConfigurationError, match="fallback model 'nope-9' has no price"):
        PriceBook(fallback_model="nope-9")


def test_allow_unpriced_is_free() -> None:
    book = PriceBook(allow_unpriced=True)
    price = book.price("acme-llm")
    assert price.is_free
    assert "fail open" in price.source
    assert book.worst_case_cost("acme-llm", input_tokens=10**6, max_output_tokens=10**6) == 0
    assert (
        book.max_affordable_output("acme-llm", input_tokens=10, budget=D("0.01"))
        == UNBOUNDED_OUTPUT
    )


def test_override_validation() -> None:
    with pytest.raises(ConfigurationError, match="must be a ModelPrice"):
        PriceBook({"m": {"input": 1, "output": 1}})  # type: ignore[dict-item]
    eur = parse_price_override("m", {"input": "1 EUR/Mtok", "output": "1 EUR/Mtok"})
    with pytest.raises(ConfigurationError, match="in EUR, but the price book is in USD"):
        PriceBook({"m": eur})
    eur_book = PriceBook({"m": eur}, currency="EUR")
    assert eur_book.price("m").currency == "EUR"
    with pytest.raises(UnpricedModelError):  # bundled USD prices are not used by a EUR book
        eur_book.price("gpt-4o")


def test_bad_arguments(book: PriceBook) -> None:
    with pytest.raises(ConfigurationError):
        book.price("  ")
    with pytest.raises(ConfigurationError, match="input_tokens"):
        book.worst_case_cost("gpt-4o", input_tokens=-1, max_output_tokens=1)
    with pytest.raises(ConfigurationError, match="max_output_tokens"):
        book.worst_case_cost("gpt-4o", input_tokens=1, max_output_tokens=True)
    with pytest.raises(ConfigurationError, match="cache_write"):
        book.worst_case_cost("gpt-4o", input_tokens=1, max_output_tokens=1, cache_write="2h")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="budget"):
        book.max_affordable_output("gpt-4o", input_tokens=1, budget=0.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="usage must be a Usage"):
        book.cost("gpt-4o", {"input_tokens": 1})  # type: ignore[arg-type]


def test_price_variants(book: PriceBook) -> None:
    standard = book.price("gpt-4o")
    priority = book.price("gpt-4o", context={"service_tier": "priority"})
    batch = book.price("gpt-4o", context={"processing": "batch"})
    assert priority.input_per_mtok > standard.input_per_mtok > batch.input_per_mtok


def test_date_dependent_prices() -> None:
    before = PriceBook(clock=lambda: datetime(2025, 6, 1, tzinfo=UTC)).price("o3")
    after = PriceBook(clock=lambda: datetime(2025, 6, 11, tzinfo=UTC)).price("o3")
    assert (before.input_per_mtok, after.input_per_mtok) == (D(10), D(2))


@pytest.mark.parametrize("hour", [0, 3, 12, 17, 23])
def test_off_peak_discount_never_lowers_the_hold(hour: int) -> None:
    # DeepSeek is cheaper off-peak; a hold cannot know the billed minute, so it is peak.
    at = datetime(2026, 12, 4, hour, 0, tzinfo=UTC)
    assert PriceBook(clock=lambda: at).price("deepseek-chat").input_per_mtok == D("0.27")


def test_independent_of_global_snapshot() -> None:
    # Another library may install downloaded prices globally; the book keeps the bundled ones.
    from genai_prices import data_snapshot

    fake = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    data_snapshot.set_custom_snapshot(fake)
    try:
        assert fixed_clock().price("gpt-4o").input_per_mtok == D("2.5")
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_per_request_fee(book: PriceBook) -> None:
    price = book.price("sonar", provider="perplexity")
    assert price.per_request == D("0.012")
    assert book.cost("sonar", Usage(), provider="perplexity") == D("0.012")


def test_lookup_works_offline(no_network: None) -> None:
    # A fresh book (empty caches) reads only the bundled data.
    book = fixed_clock()
    for ref in ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o3", "deepseek-chat"):
        assert book.price(ref).input_per_mtok > 0


# -- arithmetic against genai-prices ----------------------------------------------------

CROSS_CHECK = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("o3", "openai"),
    ("gpt-5", "openai"),
    ("gpt-4.1", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("claude-3-5-haiku-latest", "anthropic"),
    ("gemini-2.5-pro", "google"),
    ("sonar-deep-research", "perplexity"),
    ("sonar-pro", "perplexity"),
]


@pytest.mark.parametrize(("model", "provider"), CROSS_CHECK)
def test_cost_matches_genai_calc_price(book: PriceBook, model: str, provider: str) -> None:
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    rng = random.Random(model)
    price = book.price(model, provider)
    for _ in range(60):
        input_tokens = rng.choice([0, 1, 999, 200_000, 200_001, 250_000, rng.randint(0, 400_000)])
        cache_read = rng.randint(0, input_tokens)
        cache_write = rng.randint(0, input_tokens - cache_read)
        write_1h = rng.randint(0, cache_write)
        output = rng.randint(0, 70_000)
        reasoning = rng.randint(0, output)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=write_1h,
            reasoning_tokens=reasoning,
        )
        genai_usage = GenaiUsage(
            input_tokens=input_tokens,
            output_tokens=output,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=write_1h,
            output_reasoning_tokens=reasoning,
        )
        expected = calc_price(
            genai_usage, model, provider_id=provider, genai_request_timestamp=NOW
        ).total_price
        assert cost_for(price, usage) == expected, usage


# -- worst case is an upper bound; affordability is exact ---------------------------------


def _bundled_prices() -> list[ModelPrice]:
    book = fixed_clock()
    return [book.price(m, p) for m, p in CROSS_CHECK] + [book.price("deepseek-chat")]


def _odd_price() -> ModelPrice:
    """A synthetic card built to break naive bounds: a cheaper upper tier, dear reasoning."""
    return ModelPrice(
        model="odd",
        provider="test",
        input_per_mtok=D("3"),
        output_per_mtok=D("10"),
        cache_read_per_mtok=D("4"),  # dearer than input
        cache_write_per_mtok=D("5"),
        cache_write_1h_per_mtok=D("9"),
        reasoning_per_mtok=D("30"),  # dearer than output
        per_request=D("0.0001"),
        tiers=(
            PriceTier(threshold=1_000, input_per_mtok=D("1"), output_per_mtok=D("2")),  # cheaper
            PriceTier(threshold=5_000, input_per_mtok=D("7"), output_per_mtok=D("40")),
        ),
        source="test",
    )


PRICES = [*_bundled_prices(), _odd_price()]


@st.composite
def call_within_caps(draw: st.DrawFn) -> tuple[ModelPrice, int, int, Usage]:
    price = draw(st.sampled_from(PRICES))
    cap_in = draw(st.integers(0, 400_000))
    cap_out = draw(st.integers(0, 200_000))
    used_in = draw(st.integers(0, cap_in))
    cache_read = draw(st.integers(0, used_in))
    cache_write = draw(st.integers(0, used_in - cache_read))
    write_1h = draw(st.integers(0, cache_write))
    used_out = draw(st.integers(0, cap_out))
    reasoning = draw(st.integers(0, used_out))
    usage = Usage(
        input_tokens=used_in,
        output_tokens=used_out,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=reasoning,
    )
    return price, cap_in, cap_out, usage


def _thirds_price() -> ModelPrice:
    """Rates whose nano-units per token are not whole (nor finite decimals of few digits)."""
    return ModelPrice(
        model="thirds",
        provider="test",
        input_per_mtok=D("0.333333333333333333333"),
        output_per_mtok=D("1.7"),
        cache_read_per_mtok=D("0.0375"),
        per_request=D("0.0000000001"),
        tiers=(PriceTier(threshold=10, input_per_mtok=D("2.5"), output_per_mtok=D("0.07")),),
        source="test",
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call_within_caps(), st.booleans())
def test_cost_in_units_is_the_decimal_cost_rounded_up(
    case: tuple[ModelPrice, int, int, Usage], thirds: bool
) -> None:
    """The integer settlement path charges exactly what the Decimal one does."""
    price, _, _, usage = case
    if thirds:
        price = _thirds_price()
    assert cost_units_for(price, usage) == money_to_units(cost_for(price, usage))


@pytest.mark.parametrize("tiny", ["1E-90", "1E-5000", "0." + "1" * 60])
def test_cost_in_units_agrees_with_the_hold_for_overrides_of_any_precision(tiny: str) -> None:
    """
    A rate with more digits than ``cost_for`` keeps: the settlement is rounded like the
    hold, so a call that used its whole worst case is not an overrun of one nano-unit.
    """
    price = ModelPrice(
        model="tiny", provider="test", input_per_mtok=D(1), output_per_mtok=D(tiny), source="t"
    )
    for used_in, used_out in ((8, 5), (1_000_000, 3), (0, 10**12)):
        usage = Usage(input_tokens=used_in, output_tokens=used_out)
        assert cost_units_for(price, usage) == money_to_units(cost_for(price, usage))
        assert cost_units_for(price, usage) == money_to_units(
            worst_case_for(price, used_in, used_out)
        )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call_within_caps())
def test_worst_case_bounds_any_usage_within_caps(case: tuple[ModelPrice, int, int, Usage]) -> None:
    price, cap_in, cap_out, usage = case
    assert cost_for(price, usage) <= worst_case_for(price, cap_in, cap_out)


@settings(max_examples=200, deadline=None)
@given(call_within_caps())
def test_worst_case_without_cache_writes(case: tuple[ModelPrice, int, int, Usage]) -> None:
    price, cap_in, cap_out, usage = case
    no_writes = Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
    assert cost_for(price, no_writes) <= worst_case_for(price, cap_in, cap_out, "none")
    assert worst_case_for(price, cap_in, cap_out, "none") <= worst_case_for(price, cap_in, cap_out)


@settings(max_examples=300, deadline=None)
@given(
    price=st.sampled_from(PRICES),
    input_tokens=st.integers(0, 400_000),
    budget=st.decimals(min_value=0, max_value=50, places=9, allow_nan=False),
    mode=st.sampled_from(["any", "none", "5m", "1h"]),
)
def test_max_affordable_output_is_exact(
    price: ModelPrice, input_tokens: int, budget: Decimal, mode: str
) -> None:
    n = max_output_for(price, input_tokens, budget, mode)  # type: ignore[arg-type]
    if worst_case_for(price, input_tokens, 0, mode) > budget:  # type: ignore[arg-type]
        assert n == 0
        return
    assert n != UNBOUNDED_OUTPUT
    assert worst_case_for(price, input_tokens, n, mode) <= budget  # type: ignore[arg-type]
    assert worst_case_for(price, input_tokens, n + 1, mode) > budget  # type: ignore[arg-type]


def test_max_affordable_output_examples(book: PriceBook) -> None:
    # gpt-4o: 1000 input = $0.0025; $0.01 leaves $0.0075 = 750 output tokens at $10/Mtok
    assert book.max_affordable_output("gpt-4o", input_tokens=1000, budget=D("0.01")) == 750
    assert book.max_affordable_output("gpt-4o", input_tokens=4000, budget=D("0.01")) == 0
    assert book.max_affordable_output("gpt-4o", input_tokens=5000, budget=D("0.01")) == 0
    embed = book.price("text-embedding-3-small", "openai")
    assert max_output_for(embed, 10, D("1")) == UNBOUNDED_OUTPUT
    assert book.max_affordable_output("gpt-4o", input_tokens=0, budget=D("-1")) == 0


def test_worst_case_examples(book: PriceBook) -> None:
    # gpt-4o: no cache-write surcharge, so "any" equals "none"
    assert book.worst_case_cost("gpt-4o", input_tokens=1000, max_output_tokens=1000) == D("0.0125")
    # Sonnet 4.5: every input token may be a 1h cache write ($6) unless the caller says not
    assert book.worst_case_cost(
        "claude-sonnet-4-5", input_tokens=1000, max_output_tokens=1000
    ) == D("0.021")
    assert book.worst_case_cost(
        "claude-sonnet-4-5", input_tokens=1000, max_output_tokens=1000, cache_write="none"
    ) == D("0.018")
    assert book.worst_case_cost(
        "claude-sonnet-4-5", input_tokens=1000, max_output_tokens=1000, cache_write="5m"
    ) == D("0.01875")
    # over the tier threshold the whole call is at the tier rates
    assert book.worst_case_cost(
        "claude-sonnet-4-5", input_tokens=250_000, max_output_tokens=1000, cache_write="none"
    ) == D("1.5225")


def test_usage_validation() -> None:
    with pytest.raises(ConfigurationError, match="include the cached parts"):
        Usage(input_tokens=10, cache_read_tokens=8, cache_write_tokens=5)
    with pytest.raises(ConfigurationError, match="output_tokens must include reasoning"):
        Usage(output_tokens=1, reasoning_tokens=2)
    with pytest.raises(ConfigurationError, match="cache_write_1h_tokens"):
        Usage(input_tokens=10, cache_write_tokens=1, cache_write_1h_tokens=2)
    with pytest.raises(ConfigurationError, match="int >= 0"):
        Usage(input_tokens=-1)
    with pytest.raises(ConfigurationError, match="int >= 0"):
        Usage(input_tokens=1.5)  # type: ignore[arg-type]
    total = Usage(input_tokens=3, output_tokens=2) + Usage(input_tokens=1, cache_read_tokens=1)
    assert total == Usage(input_tokens=4, output_tokens=2, cache_read_tokens=1)
    assert total.total_tokens == 6


def test_bundled_snapshot_is_built_once_from_the_wheel() -> None:
    assert bundled_snapshot() is bundled_snapshot()
    assert bundled_snapshot().from_auto_update is False


def test_arithmetic_matches_the_plain_decimal_formulas() -> None:
    """The cached, context-method arithmetic gives the very Decimals of the plain formulas."""
    from decimal import Context, localcontext

    exact = Context(prec=80)
    price = ModelPrice(
        model="tiered",
        provider="custom",
        input_per_mtok=D("1.25"),
        output_per_mtok=D("10"),
        cache_read_per_mtok=D("0.3"),
        cache_write_per_mtok=D("3.75"),
        cache_write_1h_per_mtok=D("6"),
        reasoning_per_mtok=D("12.5"),
        per_request=D("0.005"),
        tiers=(
            PriceTier(threshold=1000, input_per_mtok=D("0.5"), output_per_mtok=D("20")),
            PriceTier(threshold=5000, input_per_mtok=D("2.50"), output_per_mtok=D("0")),
        ),
        source="test",
    )
    levels = price.levels()
    rnd = random.Random(7)
    for _ in range(300):
        inputs, output = rnd.randrange(0, 8000), rnd.randrange(0, 10**5)
        level = price.level_for(inputs)
        read = rnd.randrange(0, inputs + 1)
        write = rnd.randrange(0, inputs - read + 1)
        usage = Usage(
            input_tokens=inputs,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=rnd.randrange(0, write + 1),
            reasoning_tokens=rnd.randrange(0, output + 1),
        )
        with localcontext(exact):
            rates = [
                getattr(level, name) if getattr(level, name) is not None else fallback
                for name, fallback in (
                    ("input_per_mtok", None),
                    ("cache_read_per_mtok", level.input_per_mtok),
                    ("cache_write_per_mtok", level.input_per_mtok),
                    ("output_per_mtok", None),
                    ("reasoning_per_mtok", level.output_per_mtok),
                )
            ]
            write_1h_rate = level.cache_write_1h_per_mtok or rates[2]
            plain = inputs - read - write
            expected = +(
                (
                    plain * rates[0]
                    + read * rates[1]
                    + (write - usage.cache_write_1h_tokens) * rates[2]
                    + usage.cache_write_1h_tokens * write_1h_rate
                    + (output - usage.reasoning_tokens) * rates[3]
                    + usage.reasoning_tokens * rates[4]
                )
                / D(1_000_000)
                + price.per_request
            )
            reachable = [lv for lv in levels if lv.threshold == 0 or inputs > lv.threshold]
        got = cost_for(price, usage)
        assert (expected, str(expected)) == (got, str(got))
        # worst case: every reachable tier, dearest input and output ways
        with localcontext(exact):
            worst = max(
                (
                    inputs
                    * max(
                        lv.input_per_mtok,
                        lv.cache_read_per_mtok or lv.input_per_mtok,
                        lv.cache_write_per_mtok or lv.input_per_mtok,
                        lv.cache_write_1h_per_mtok or lv.cache_write_per_mtok or lv.input_per_mtok,
                    )
                    + output * max(lv.output_per_mtok, lv.reasoning_per_mtok or 0)
                )
                / D(1_000_000)
                for lv in reachable
            )
            expected_worst = +(worst + price.per_request)
        assert expected_worst == worst_case_for(price, inputs, output)
        budget = D(rnd.randrange(0, 10**6)) / D(10**4)
        n = max_output_for(price, inputs, budget)
        if n == UNBOUNDED_OUTPUT:  # output is free in the top tier
            assert inputs > 5000
        elif worst_case_for(price, inputs, 0) <= budget:  # else: not even the input fits
            assert worst_case_for(price, inputs, n) <= budget < worst_case_for(price, inputs, n + 1)
