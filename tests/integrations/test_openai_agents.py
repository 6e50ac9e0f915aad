"""
OpenAI Agents SDK with real agents, Runner and OpenAIChatCompletionsModel against the fake
provider: turns, tool calls, handoffs and 32 agents-as-tools on one budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool

import execbudget
from execbudget import BudgetExceeded, FanOutExceeded, StepBudgetExceeded, TokenBudgetExceeded
from execbudget.integrations.openai_agents import (
    BudgetedModelProvider,
    as_tool,
    chat_model,
    run_agent,
)
from execbudget.testing import FakeProvider

from .conftest import MODEL, billed_tokens, held, spent

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SUB_AGENTS = 32
#: the orchestrator's first request alone carries ~2,800 input tokens (32 tool schemas)
LIMIT = 6_000


@pytest.fixture
async def client(fake_provider: FakeProvider) -> AsyncIterator[Any]:
    made = fake_provider.async_openai()
    yield made
    await made.close()


def refuse_softly(ctx: Any, error: Exception) -> str:
    """Tell the model a delegate was refused, so its siblings finish (test only)."""
    if isinstance(error, BudgetExceeded):
        return "refused: no budget left"
    raise error


async def test_32_agents_as_tools_share_one_budget_with_zero_overshoot(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer = enforcer_for(
        {"scopes": [{"match": "run:orchestrator", "limits": {"tokens": LIMIT}}]}
    )
    parent_client = fake_provider.async_openai(
        default_headers={"x-fake-tool-calls-per-turn": str(SUB_AGENTS)}
    )
    child_client = fake_provider.async_openai(
        default_headers={"x-fake-output-tokens": "1000", "x-fake-latency-ms": "50"}
    )
    children = [
        Agent(
            name=f"researcher {i}",
            model=chat_model(MODEL, child_client),
            model_settings=ModelSettings(max_tokens=1000),
        )
        for i in range(SUB_AGENTS)
    ]
    tools = [
        as_tool(child, f"research_{i}", "research a topic", failure_error_function=refuse_softly)
        for i, child in enumerate(children)
    ]
    parent = Agent(
        name="orchestrator",
        model=chat_model(MODEL, parent_client),
        tools=tools,
        model_settings=ModelSettings(max_tokens=600),
    )
    async with execbudget.run("orchestrator"):
        with pytest.raises(TokenBudgetExceeded) as info:  # the orchestrator's own final turn
            await run_agent(parent, "research everything", max_turns=50)
    assert info.value.scope.startswith("run:orchestrator#")
    children_sent = len(fake_provider.requests) - 1
    # the room left after the orchestrator's first turn fits a few 1,000-token worst cases;
    # those sub-agents ran to completion, the others were refused before sending anything
    assert 0 < children_sent < SUB_AGENTS
    assert all(r.outcome == "ok" for r in fake_provider.requests)
    assert billed_tokens(fake_provider) <= LIMIT
    assert spent(enforcer, "tokens") <= LIMIT and held(enforcer) == 0
    await parent_client.close()
    await child_client.close()


async def test_turns_are_steps_and_a_denial_stops_the_run(
    fake_provider: FakeProvider, client: Any, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer = enforcer_for({"scopes": [{"match": "run:agent", "limits": {"steps": 3}}]})
    ran: list[str] = []

    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        ran.append(query)
        return "nothing"

    agent = Agent(name="agent", model=chat_model(MODEL, client), tools=[lookup])
    async with execbudget.run("agent"):
        with pytest.raises(StepBudgetExceeded) as info:
            await run_agent(agent, "go", max_turns=100)
    assert info.value.dimension == "steps"
    assert len(fake_provider.requests) == 3 and len(ran) == 3
    assert spent(enforcer, "steps") == 3


async def test_tool_calls_and_handoffs_count(
    fake_provider: FakeProvider, client: Any, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"tool_calls": 2}}]})

    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "nothing"

    agent = Agent(name="agent", model=chat_model(MODEL, client), tools=[lookup])
    async with execbudget.run("agent"):
        with pytest.raises(StepBudgetExceeded) as info:
            await run_agent(agent, "go", max_turns=100)
    assert info.value.dimension == "tool_calls" and len(fake_provider.requests) == 3

    fake_provider.reset()
    fake_provider.configure(tool_call_policy="first_turn")
    enforcer = enforcer_for({"scopes": [{"match": "run:triage", "limits": {"tool_calls": 5}}]})
    expert = Agent(name="expert", model=chat_model(MODEL, client))
    triage = Agent(name="triage", model=chat_model(MODEL, client), handoffs=[expert])
    async with execbudget.run("triage"):
        await run_agent(triage, "help")
    assert spent(enforcer, "tool_calls") == 1  # the handoff: the model called transfer_to_expert


async def test_a_sub_agent_is_a_branch_and_a_nested_run(
    fake_provider: FakeProvider, client: Any, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")  # the boss keeps delegating
    enforcer = enforcer_for(
        {
            "scopes": [
                {"match": "run:boss", "limits": {"steps": 20, "fan_out": 3}},
                {"match": "run:helper", "limits": {"steps": 2}},
            ]
        }
    )
    helper = Agent(name="helper", model=chat_model(MODEL, client))
    tool = as_tool(helper, "ask_helper", "ask the helper")
    boss = Agent(name="boss", model=chat_model(MODEL, client), tools=[tool])
    async with execbudget.run("boss"):
        with pytest.raises(FanOutExceeded):  # the 4th delegation: 3 branches per boss run
            await run_agent(boss, "go", max_turns=100)
    helper_runs = [s for s in enforcer.status("run:helper#") if s.key.dimension == "steps"]
    assert len(helper_runs) == 3 and all(s.spent == 1 for s in helper_runs)  # depth-2 runs
    assert spent(enforcer, "steps", "run:boss#") == 4 + 3  # its turns + the helpers' turns


async def test_sub_agents_are_capped_by_depth(
    fake_provider: FakeProvider, client: Any, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer_for({"scopes": [{"match": "run:boss", "limits": {"depth": 1}}]})
    helper = Agent(name="helper", model=chat_model(MODEL, client))
    boss = Agent(
        name="boss", model=chat_model(MODEL, client), tools=[as_tool(helper, "ask", "ask")]
    )
    async with execbudget.run("boss"):
        with pytest.raises(StepBudgetExceeded) as info:
            await run_agent(boss, "go", max_turns=100)
    assert info.value.dimension == "depth" and len(fake_provider.requests) == 1


async def test_a_model_provider_holds_agents_named_by_string(
    fake_provider: FakeProvider, client: Any, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"cost": "0.0000001 USD"}}]})
    agent = Agent(name="agent", model=MODEL)
    config = RunConfig(model_provider=BudgetedModelProvider(client))
    async with execbudget.run("agent"):
        with pytest.raises(BudgetExceeded):
            await Runner.run(agent, "hi", run_config=config)
    assert fake_provider.requests == []
