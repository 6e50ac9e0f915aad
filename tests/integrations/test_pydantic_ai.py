"""
pydantic-ai with real agents and OpenAIChatModel against the fake provider: 32 concurrent
delegates on a 3,000-token budget, pydantic-ai's UsageLimits side by side with ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic_ai import Agent, RunContext, UsageLimits
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import execbudget
from execbudget import ConfigurationError, StepBudgetExceeded, TokenBudgetExceeded
from execbudget.integrations.pydantic_ai import BudgetedModel, ExecBudget, openai_model
from execbudget.testing import FakeProvider

from .conftest import MODEL, billed_tokens, spent

DELEGATES = 32
LIMIT = 3_000
CHILD_OUTPUT = 1_000


@pytest.fixture
async def clients(fake_provider: FakeProvider) -> AsyncIterator[tuple[Any, Any]]:
    """The parent asks for 32 delegations at once; each child answers 1,000 tokens, slowly."""
    parent = fake_provider.async_openai(
        default_headers={"x-fake-tool-calls-per-turn": str(DELEGATES)}
    )
    child = fake_provider.async_openai(
        default_headers={
            "x-fake-output-tokens": str(CHILD_OUTPUT),
            "x-fake-latency-ms": "50",
            "x-fake-tool-call-policy": "never",
        }
    )
    yield parent, child
    await parent.close()
    await child.close()


def delegating(parent_model: Any, child_model: Any, *, share_usage: bool, **kw: Any) -> Agent:
    child: Agent[None, str] = Agent(child_model, **kw)
    parent: Agent[None, str] = Agent(parent_model, **kw)

    @parent.tool
    async def delegate(ctx: RunContext[None], topic: str) -> str:
        if share_usage:  # pydantic-ai's documented delegation pattern
            result = await child.run(topic, usage=ctx.usage, usage_limits=ctx.usage_limits)
            return result.output
        try:
            result = await child.run(topic)
        except TokenBudgetExceeded:
            refused.append(topic)  # refused before its request was sent; siblings go on
            return "refused: no budget left"
        finished.append(topic)
        return result.output

    refused: list[str] = []
    finished: list[str] = []
    parent.refused, parent.finished = refused, finished  # type: ignore[attr-defined]

    return parent


async def test_peer_usage_limits_overshoot_with_32_delegates(
    fake_provider: FakeProvider, clients: tuple[Any, Any]
) -> None:
    """The reference behaviour: every delegate passes the check before any reports usage."""
    parent_client, child_client = clients
    parent = delegating(
        OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=parent_client)),
        OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=child_client)),
        share_usage=True,
    )
    with pytest.raises(UsageLimitExceeded):
        await parent.run(
            "go", usage_limits=UsageLimits(request_limit=None, total_tokens_limit=LIMIT)
        )
    assert len(fake_provider.requests) == 1 + DELEGATES
    # pydantic-ai raised with answers still being generated: wait for the provider to finish
    # them (read too early, the count ran low here and the rest landed in the next test's)
    fake_provider.wait_for_requests(1 + DELEGATES)
    assert billed_tokens(fake_provider) > 10 * LIMIT  # ~32,000 tokens on a 3,000 limit


async def test_ours_holds_32_delegates_to_the_budget_with_zero_overshoot(
    fake_provider: FakeProvider, clients: tuple[Any, Any], enforcer_for: Callable[..., Any]
) -> None:
    enforcer = enforcer_for({"scopes": [{"match": "run:parent", "limits": {"tokens": LIMIT}}]})
    parent_client, child_client = clients
    parent = delegating(
        openai_model(MODEL, parent_client),
        openai_model(MODEL, child_client),
        share_usage=False,
        model_settings={"max_tokens": CHILD_OUTPUT},
    )
    async with execbudget.run("parent"):
        with pytest.raises(TokenBudgetExceeded):  # the parent's own final call: no room left
            await parent.run("go", usage_limits=UsageLimits(request_limit=None))
    finished, refused = parent.finished, parent.refused  # type: ignore[attr-defined]
    # 3,000 - the parent's first call leaves room for two 1,009-token worst cases: exactly
    # two delegates ran, to completion; thirty were refused before sending anything
    assert (len(finished), len(refused)) == (2, DELEGATES - 2)
    assert len(fake_provider.requests) == 1 + 2
    assert billed_tokens(fake_provider) <= LIMIT
    assert spent(enforcer, "tokens") <= LIMIT


async def test_the_capability_charges_steps_and_tool_calls(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer = enforcer_for(
        {"scopes": [{"match": "run:agent", "limits": {"steps": 10, "tool_calls": 3}}]}
    )
    client = fake_provider.async_openai()
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    agent: Agent[None, str] = Agent(model, capabilities=[ExecBudget()])
    ran: list[str] = []

    @agent.tool_plain
    def lookup(query: str) -> str:
        ran.append(query)
        return "nothing"

    async with execbudget.run("agent"):
        with pytest.raises(StepBudgetExceeded) as info:
            await agent.run("go", usage_limits=UsageLimits(request_limit=None))
    assert info.value.dimension == "tool_calls" and len(ran) == 3
    assert spent(enforcer, "steps") == 4 and len(fake_provider.requests) == 4
    await client.close()


async def test_a_model_without_a_client_is_refused_unless_trusted() -> None:
    def answer(messages: list[Any], info: AgentInfo) -> Any:
        from pydantic_ai.messages import ModelResponse, TextPart

        return ModelResponse(parts=[TextPart("ok")])

    with pytest.raises(ConfigurationError, match="cannot hold"):
        BudgetedModel(FunctionModel(answer))
    enforcer = execbudget.configure(
        {"scopes": [{"match": "run:t", "limits": {"calls": 1}}]}, "memory://"
    )
    agent: Agent[None, str] = Agent(BudgetedModel(FunctionModel(answer), trust_unwrapped=True))
    async with execbudget.run("t"):
        assert (await agent.run("hi")).output == "ok"
        with pytest.raises(StepBudgetExceeded):
            await agent.run("again")
    assert spent(enforcer, "calls") == 1
