"""
LangGraph / LangChain with the real framework and ChatOpenAI against the fake provider:
every model call held, every tool call and super-step charged, denials never swallowed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AnyMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import RetryPolicy, Send

import execbudget
from execbudget import (
    CostBudgetExceeded,
    FanOutExceeded,
    RetryBudgetExceeded,
    StepBudgetExceeded,
)
from execbudget.integrations.langgraph import (
    BudgetCallbackHandler,
    admit_sends,
    chat_model,
    graph_config,
    retry_policy,
    tool_error_handler,
)
from execbudget.testing import FakeProvider

from .conftest import MODEL, billed_tokens, held, spent

TOKENS = 20_000
COST = "0.05 USD"


class Messages(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def llm(fp: FakeProvider, **kwargs: Any) -> ChatOpenAI:
    return chat_model(
        ChatOpenAI(
            model=MODEL,
            base_url=fp.openai_base_url,
            api_key="fake-key",  # type: ignore[arg-type]
            max_retries=0,
            max_tokens=64,  # type: ignore[call-arg]
            **kwargs,
        )
    )


def react_agent(fp: FakeProvider, tools: list[Any], tool_node: ToolNode, **node: Any) -> Any:
    """The ReAct loop, by hand: agent → tools → agent ... until no tool is called."""
    model = llm(fp).bind_tools(tools)

    def agent(state: Messages) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: Messages) -> str:
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) else END

    graph = StateGraph(Messages)
    graph.add_node("agent", agent)
    graph.add_node("tools", tool_node, **node)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


def counting_tool(fails: bool = True) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @tool
    def lookup(query: str) -> str:
        """Look something up in the backend."""
        calls.append(query)
        if fails:
            raise ConnectionError("backend down")  # LangGraph retries these by default
        return "found"

    return lookup, calls


def test_runaway_recursion_stops_at_the_step_cap(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")  # the model never stops calling it
    enforcer = enforcer_for(
        {
            "scopes": [
                {"match": "run:agent", "limits": {"steps": 12, "tokens": TOKENS, "cost": COST}}
            ]
        }
    )
    lookup, calls = counting_tool()
    app = react_agent(fake_provider, [lookup], ToolNode([lookup], handle_tool_errors=True))
    with execbudget.run("agent"), pytest.raises(StepBudgetExceeded) as info:
        app.invoke({"messages": [("user", "find it")]}, graph_config())
    assert info.value.dimension == "steps" and info.value.limit == "12"
    # 12 super-steps: agent, tools, agent, tools, ... — 6 model calls, 6 tool failures
    assert len(fake_provider.requests) == 6 and len(calls) == 6
    assert billed_tokens(fake_provider) <= TOKENS
    assert spent(enforcer, "cost") <= 50_000_000 and held(enforcer) == 0


def test_runaway_retries_stop_at_the_retry_cap(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"retries": 3, "cost": COST}}]})
    lookup, calls = counting_tool()
    app = react_agent(
        fake_provider,
        [lookup],
        ToolNode([lookup], handle_tool_errors=False),
        retry_policy=retry_policy(max_attempts=100, initial_interval=0.001, jitter=False),
    )
    with execbudget.run("agent"), pytest.raises(RetryBudgetExceeded):
        app.invoke({"messages": [("user", "find it")]}, graph_config())
    assert len(calls) == 4  # the first attempt and 3 retries; the 4th retry was denied


def test_a_plain_retry_policy_does_not_rerun_a_denied_task(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"retries": 1}}]})
    lookup, calls = counting_tool()
    app = react_agent(
        fake_provider,
        [lookup],
        ToolNode([lookup], handle_tool_errors=False),
        retry_policy=RetryPolicy(max_attempts=6, initial_interval=0.001, jitter=False),
    )
    with execbudget.run("agent"), pytest.raises(RetryBudgetExceeded):
        app.invoke({"messages": [("user", "find it")]}, graph_config())
    assert len(calls) == 2  # LangGraph retried the denial, but it was re-raised unpaid


def test_a_tool_denial_is_not_swallowed_into_a_message(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"tool_calls": 2}}]})
    lookup, calls = counting_tool(fails=False)
    node = ToolNode([lookup], handle_tool_errors=tool_error_handler())
    app = react_agent(fake_provider, [lookup], node)
    with execbudget.run("agent"), pytest.raises(StepBudgetExceeded) as info:
        app.invoke({"messages": [("user", "find it")]}, graph_config())
    assert info.value.dimension == "tool_calls" and len(calls) == 2


def test_a_model_call_denial_propagates_and_nothing_is_sent(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"cost": "0.000001 USD"}}]})
    lookup, _ = counting_tool()
    app = react_agent(fake_provider, [lookup], ToolNode([lookup]))
    with execbudget.run("agent"), pytest.raises(CostBudgetExceeded):
        app.invoke({"messages": [("user", "hi")]}, graph_config())
    assert fake_provider.requests == []


class Loop(TypedDict):
    n: int


def looping_subgraph(turns: int) -> Any:
    def tick(state: Loop) -> dict[str, int]:
        return {"n": state["n"] + 1}

    graph = StateGraph(Loop)
    graph.add_node("tick", tick)
    graph.add_edge(START, "tick")
    graph.add_conditional_edges("tick", lambda s: "tick" if s["n"] % turns else END, ["tick", END])
    return graph.compile()


def test_subgraphs_and_invocations_draw_from_one_step_budget(
    enforcer_for: Callable[..., Any],
) -> None:
    enforcer = enforcer_for({"scopes": [{"match": "run:agent", "limits": {"steps": 30}}]})
    sub = looping_subgraph(8)
    parent = StateGraph(Loop)
    for name in ("a", "b", "c"):
        parent.add_node(name, sub)
    parent.add_edge(START, "a")
    parent.add_edge("a", "b")
    parent.add_edge("b", "c")
    parent.add_edge("c", END)
    app = parent.compile()
    # LangGraph alone: recursion_limit=10 and yet 3 × 8 subgraph steps run (fresh limits)
    assert app.invoke({"n": 0}, {"recursion_limit": 10})["n"] == 24
    with execbudget.run("agent"):
        app.invoke({"n": 0}, graph_config())  # 3 parent + 24 subgraph super-steps = 27
        assert spent(enforcer, "steps") == 27
        with pytest.raises(StepBudgetExceeded):
            app.invoke({"n": 0}, graph_config())  # a new invocation: no fresh budget
    assert spent(enforcer, "steps") == 30


class Work(TypedDict):
    items: list[int]
    done: Annotated[list[str], operator.add]


def fan_out_graph(fp: FakeProvider, admit: bool, **admit_kwargs: Any) -> Any:
    model = llm(fp)

    def start(state: Work) -> dict[str, Any]:
        return {}

    def route(state: Work) -> list[Send]:
        sends = [Send("work", {"item": i}) for i in state["items"]]
        return admit_sends(sends, **admit_kwargs) if admit else sends

    def work(arg: dict[str, int]) -> dict[str, Any]:
        reply = model.invoke(f"summarise item {arg['item']}")
        return {"done": [str(reply.content)[:5]]}

    graph = StateGraph(Work)
    graph.add_node("start", start)
    graph.add_node("work", work)  # type: ignore[arg-type]
    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", route, ["work"])
    graph.add_edge("work", END)
    return graph.compile()


FAN_OUT_POLICY: dict[str, Any] = {
    "scopes": [{"match": "run:batch", "limits": {"fan_out": 10, "concurrency": 4, "cost": COST}}]
}


def test_ten_thousand_sends_are_refused_before_any_model_call(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for(FAN_OUT_POLICY)
    app = fan_out_graph(fake_provider, admit=True)
    with execbudget.run("batch"), pytest.raises(FanOutExceeded) as info:
        app.invoke({"items": list(range(10_000)), "done": []}, graph_config())
    assert info.value.requested == "10,000" and fake_provider.requests == []


def test_sends_truncated_to_the_room(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer = enforcer_for(FAN_OUT_POLICY)
    app = fan_out_graph(fake_provider, admit=True, on_excess="truncate")
    with execbudget.run("batch"):
        out = app.invoke({"items": list(range(10_000)), "done": []}, graph_config())
    assert len(out["done"]) == 10 and len(fake_provider.requests) == 10
    assert spent(enforcer, "fan_out") == 10  # admitted once, not charged again per task
    assert held(enforcer) == 0  # every Send task's concurrency slot was released


def test_sends_refused_on_projected_cost(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for(FAN_OUT_POLICY)
    app = fan_out_graph(fake_provider, admit=True, item_cost="0.01 USD")
    with execbudget.run("batch"), pytest.raises(FanOutExceeded) as info:
        app.invoke({"items": list(range(8)), "done": []}, graph_config())  # 0.08 > 0.05
    assert info.value.dimension == "cost" and fake_provider.requests == []


def test_sends_without_admission_are_still_counted_per_task(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer = enforcer_for(FAN_OUT_POLICY)
    app = fan_out_graph(fake_provider, admit=False)
    with execbudget.run("batch"), pytest.raises(FanOutExceeded):
        app.invoke({"items": list(range(15)), "done": []}, graph_config())
    assert spent(enforcer, "fan_out") == 10 and len(fake_provider.requests) <= 10
    assert held(enforcer) == 0


def test_graph_config_sizes_max_concurrency_and_keeps_callbacks(
    enforcer_for: Callable[..., Any],
) -> None:
    enforcer_for(FAN_OUT_POLICY)
    mine = BudgetCallbackHandler()
    with execbudget.run("batch") as run:
        config = graph_config(run, base={"max_concurrency": 16, "callbacks": [mine]})
    assert config["max_concurrency"] == 4
    assert config["callbacks"][0] is mine and len(config["callbacks"]) == 2  # type: ignore[index,arg-type]


async def test_an_async_graph_is_held_the_same_way(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(tool_call_policy="always")
    enforcer_for({"scopes": [{"match": "run:agent", "limits": {"steps": 8, "cost": COST}}]})
    lookup, calls = counting_tool(fails=False)
    app = react_agent(fake_provider, [lookup], ToolNode([lookup]))
    async with execbudget.run("agent"):
        with pytest.raises(StepBudgetExceeded):
            await app.ainvoke({"messages": [("user", "go")]}, graph_config())
    assert len(fake_provider.requests) == 4 and len(calls) == 4
