"""
Guarded calls through the real OpenAI and Anthropic SDKs against the fake provider:
admission (deny, clamp, downgrade, caps, unpriced), what reaches the server, settlement
from reported and from locally counted usage, sync and async.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import execbudget
from execbudget import (
    CostBudgetExceeded,
    OutputBudgetExceeded,
    TokenBudgetExceeded,
    UnpricedModelError,
)
from execbudget.pricing import PriceBook, TokenCounter
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units, units_to_money

from .conftest import Clients, MakeEnforcer, held, spent

MINI = "gpt-4o-mini"
HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Say hello to the budget in a few words."}]
COUNTER = TokenCounter()
BOOK = PriceBook()


def run_limits(
    limits: dict[str, Any], per_call: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    rule: dict[str, Any] = {"match": "run:*", "limits": limits}
    if per_call:
        rule["per_call"] = per_call
    return {"scopes": [rule], **top}


def test_a_call_that_cannot_fit_never_reaches_the_server(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"cost": "0.000001 USD"}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"), pytest.raises(CostBudgetExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=1000)
    assert info.value.scope.startswith("run:t") and info.value.dimension == "cost"
    assert fp.requests == []


def test_the_per_call_cap_is_what_arrives_and_usage_is_settled(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(
        run_limits({"cost": "1 USD", "tokens": 100_000}, {"max_output_tokens": 40})
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        response = client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=400)
    body = fp.requests[-1].body
    assert body["max_tokens"] == 40 and "max_completion_tokens" not in body
    assert response.usage is not None and response.usage.completion_tokens == 40
    usage = response.usage
    assert spent(enforcer, "tokens") == usage.prompt_tokens + 40
    expected = (
        Decimal(usage.prompt_tokens) * Decimal("0.15") / 10**6
        + Decimal(40) * Decimal("0.6") / 10**6
    )
    assert spent(enforcer, "cost") == money_to_units(expected)


def test_each_chain_gets_its_own_per_call_caps(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    """One wrapped client, calls on chains with different caps, one after the other."""
    enforcer = make_enforcer(
        {
            "scopes": [
                {"match": "run:*", "limits": {"calls": 100}, "per_call": {"max_output_tokens": 40}},
                {"match": "team:small", "per_call": {"max_output_tokens": 10}},
            ]
        }
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    sent = []
    for team in ("big", "small", "big"):
        with enforcer.scope("team", team), enforcer.run("t"):
            client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=400)
        sent.append(fp.requests[-1].body["max_tokens"])
    assert sent == [40, 10, 40]


def test_the_counted_input_equals_what_the_provider_bills_for_openai(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"input_tokens": 10_000}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert COUNTER.count_chat(HELLO, MINI) == fp.requests[-1].input_tokens
    assert spent(enforcer, "input_tokens") == fp.requests[-1].input_tokens


def test_clamp_mode_sends_exactly_what_the_budget_affords(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=10_000)
    limit = Decimal("0.0001")
    enforcer = make_enforcer(run_limits({"cost": f"{limit} USD"}, degradation={"mode": "clamp"}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    inputs = COUNTER.count_chat(HELLO, MINI)
    afford = BOOK.max_affordable_output(MINI, input_tokens=inputs, budget=limit)
    with enforcer.run("t"):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=100_000)
    assert fp.requests[-1].body["max_tokens"] == afford
    assert spent(enforcer, "cost") <= money_to_units(limit)


def test_deny_mode_denies_an_explicit_value_that_does_not_fit_but_sizes_a_missing_one(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=10_000)
    enforcer = make_enforcer(run_limits({"tokens": 300}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    inputs = COUNTER.count_chat(HELLO, MINI)
    with enforcer.run("t"):
        with pytest.raises(TokenBudgetExceeded):
            client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=1000)
        assert fp.requests == []
        client.chat.completions.create(model=MINI, messages=HELLO)
    assert fp.requests[-1].body["max_completion_tokens"] == 300 - inputs
    assert spent(enforcer, "tokens") == 300


def test_below_the_floor_is_denied_without_a_request(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(
        run_limits({"tokens": 40}, {"min_output_tokens": 64}, degradation={"mode": "clamp"})
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"), pytest.raises(TokenBudgetExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=500)
    assert info.value.dimension == "tokens" and fp.requests == []


def test_the_input_cap_denies_before_anything_is_held(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"tokens": 10_000}, {"max_input_tokens": 5}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"), pytest.raises(OutputBudgetExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert (info.value.reason, info.value.dimension) == ("cap", "input_tokens")
    assert fp.requests == [] and spent(enforcer, "tokens") == 0


def test_downgrade_sends_the_cheaper_model_when_the_requested_one_cannot_fit(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=10_000)
    enforcer = make_enforcer(
        run_limits({"cost": "0.0002 USD"}, degradation={"mode": "downgrade", "model": MINI})
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        # a call that fits the requested model is sent as asked
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2)
        assert fp.requests[-1].body["model"] == "gpt-4o"
        response = client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=300)
        assert fp.requests[-1].body["model"] == MINI and response.model == MINI
        assert fp.requests[-1].body["max_tokens"] < 300  # clamped on the cheaper model


def test_an_unpriced_model_is_denied_unless_the_policy_prices_it(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"cost": "1 USD"}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"), pytest.raises(UnpricedModelError):
        client.chat.completions.create(model="acme-llm-9", messages=HELLO, max_tokens=5)
    assert fp.requests == []
    priced = make_enforcer(
        run_limits(
            {"cost": "1 USD"},
            pricing={"models": {"acme-llm-9": {"input": "1 USD/Mtok", "output": "2 USD/Mtok"}}},
        )
    )
    client = execbudget.wrap(sdk.openai(), enforcer=priced)
    with priced.run("t"):
        client.chat.completions.create(model="acme-llm-9", messages=HELLO, max_tokens=5)
    assert spent(priced, "cost") > 0


def test_an_unpriced_model_passes_where_no_money_is_budgeted(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"tokens": 10_000}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        client.chat.completions.create(model="acme-llm-9", messages=HELLO, max_tokens=5)
    assert spent(enforcer, "tokens") == fp.requests[-1].input_tokens + 5  # type: ignore[operator]
    capped = make_enforcer(run_limits({"tokens": 10_000}, {"max_cost": "0.01 USD"}))
    client = execbudget.wrap(sdk.openai(), enforcer=capped)
    with capped.run("t"), pytest.raises(UnpricedModelError):
        client.chat.completions.create(model="acme-llm-9", messages=HELLO, max_tokens=5)


def test_a_response_without_usage_is_counted_locally(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(omit_usage=True, output_tokens=25)
    enforcer = make_enforcer(run_limits({"tokens": 10_000, "output_tokens": 10_000}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        response = client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=100)
    assert response.usage is None
    billed = fp.requests[-1]
    assert spent(enforcer, "output_tokens") == billed.output_tokens == 25
    assert spent(enforcer, "tokens") == billed.input_tokens + 25  # type: ignore[operator]


def test_responses_and_embeddings(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(
        run_limits({"tokens": 10_000, "cost": "1 USD"}, {"max_output_tokens": 30})
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        response = client.responses.create(model=MINI, input="Write a haiku about holds.")
        assert fp.requests[-1].body["max_output_tokens"] == 30
        assert response.usage is not None and response.usage.output_tokens == 30
        embedded = client.embeddings.create(
            model="text-embedding-3-small", input=["one two three", "four"]
        )
        assert fp.requests[-1].input_tokens == embedded.usage.prompt_tokens
    billed = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in fp.requests)
    assert spent(enforcer, "tokens") == billed


def test_anthropic_messages_are_clamped_and_settled(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(run_limits({"tokens": 10_000}, {"max_output_tokens": 20}))
    client = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with enforcer.run("t"):
        message = client.messages.create(
            model=HAIKU, max_tokens=2000, messages=HELLO, system="Be brief.", thinking=thinking
        )
    body = fp.requests[-1].body
    assert body["max_tokens"] == 20 and body["thinking"]["budget_tokens"] == 19
    assert message.usage.output_tokens == 20
    assert spent(enforcer, "tokens") == message.usage.input_tokens + 20
    # the estimate held for Claude bounds what the provider billed
    assert COUNTER.count_anthropic(HELLO, HAIKU, "Be brief.") >= message.usage.input_tokens


def test_other_attributes_pass_through_unbudgeted(sdk: Clients, fp: FakeProvider) -> None:
    raw = sdk.openai()
    client = execbudget.wrap(raw)
    assert client.models.list().data  # type: ignore[attr-defined]
    assert client.base_url == raw.base_url
    assert client.unwrapped is raw  # type: ignore[attr-defined]
    assert client.with_options(max_retries=7).settings.retries == 7  # type: ignore[attr-defined]
    with pytest.raises(execbudget.ConfigurationError):
        execbudget.wrap(object())


def test_outside_any_scope_nothing_is_held(sdk: Clients, fp: FakeProvider) -> None:
    execbudget.configure(None, "memory://")
    try:
        client = execbudget.wrap(sdk.openai())
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=3)
        assert fp.requests[-1].body["max_tokens"] == 3
    finally:
        execbudget.configure(None, "memory://")


async def test_async_calls_hold_and_settle(fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(
        run_limits({"tokens": 10_000, "cost": "1 USD"}, {"max_output_tokens": 16})
    )
    async with (
        execbudget.wrap(fp.async_openai(), enforcer=enforcer) as openai_client,
        execbudget.wrap(fp.async_anthropic(), enforcer=enforcer) as anthropic_client,
    ):
        async with enforcer.run("t"):
            chat = await openai_client.chat.completions.create(model=MINI, messages=HELLO)
            response = await openai_client.responses.create(
                model=MINI, input="hi", max_output_tokens=99
            )
            message = await anthropic_client.messages.create(
                model=HAIKU, max_tokens=99, messages=HELLO
            )
            with pytest.raises(UnpricedModelError):
                await openai_client.chat.completions.create(model="acme-llm-9", messages=HELLO)
    sent = [
        r.body.get("max_completion_tokens")
        or r.body.get("max_output_tokens")
        or r.body.get("max_tokens")
        for r in fp.requests
    ]
    assert sent == [16, 16, 16]
    assert chat.usage is not None and response.usage is not None
    billed = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in fp.requests)
    assert spent(enforcer, "tokens") == billed
    assert held(enforcer) == 0 and message.usage.output_tokens == 16


async def test_a_cap_below_the_apis_minimum_is_denied(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"tokens": 10_000}, {"max_output_tokens": 12}))
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            with pytest.raises(OutputBudgetExceeded) as info:
                await client.responses.create(model=MINI, input="hi")
    assert info.value.reason == "cap" and fp.requests == []


def test_sqlite_ledger(sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    enforcer = make_enforcer(run_limits({"cost": "0.01 USD"}), ledger="sqlite")
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        for _ in range(3):
            client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=8)
    assert 0 < units_to_money(spent(enforcer, "cost")) < Decimal("0.01")


def test_raw_responses_are_budgeted_too(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(run_limits({"tokens": 100_000}, {"max_output_tokens": 16}))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        raw = client.chat.completions.with_raw_response.create(
            model=MINI, messages=HELLO, max_tokens=400
        )
        assert raw.headers["x-request-id"] and raw.parse().usage.completion_tokens == 16
        raw = client.with_raw_response.responses.create(model=MINI, input="hi")  # type: ignore[attr-defined]
        assert raw.parse().usage.output_tokens == 16
        raw = client.chat.completions.with_raw_response.create(
            model=MINI, messages=HELLO, stream=True
        )
        chunks = list(raw.parse())
        assert chunks and raw.parse().settled
    assert [
        r.body.get("max_tokens")
        or r.body.get("max_output_tokens")
        or r.body.get("max_completion_tokens")
        for r in fp.requests
    ] == [16, 16, 16]
    billed = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in fp.requests)
    assert spent(enforcer, "tokens") == billed


async def test_async_raw_responses_with_an_async_parse(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(run_limits({"tokens": 100_000}, {"max_output_tokens": 16}))
    async with execbudget.wrap(fp.async_anthropic(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            raw = await client.messages.with_raw_response.create(
                model=HAIKU, max_tokens=400, messages=HELLO
            )
            message = await raw.parse()
            raw = await client.with_raw_response.messages.create(  # type: ignore[attr-defined]
                model=HAIKU, max_tokens=400, messages=HELLO, stream=True
            )
            async for _ in await raw.parse():
                pass
    assert message.usage.output_tokens == 16
    assert [r.body["max_tokens"] for r in fp.requests] == [16, 16]
    billed = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in fp.requests)
    assert spent(enforcer, "tokens") == billed
