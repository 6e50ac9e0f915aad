"""
Runaway recursion: a LangGraph ReAct agent whose tool fails forever.

The agent's knowledge-base tool is down. ``ToolNode(handle_tool_errors=True)`` (the usual
setting) hands each error back to the model as a message, and the model, as models do,
calls the tool again: agent → tools → agent → ... Each turn resends the whole growing
conversation. LangGraph's only brake is ``recursion_limit``, counted in super-steps,
restarted at every invocation and every subgraph, and 10,007 by default since it was
raised from 25 (frameworks.md §2.3, PR #6676: "burden really should be on the user").

* **Without budgets**: plain LangGraph and ``ChatOpenAI``; the simulator's safety cap ends
  it (LangGraph's own default would allow about 5,000 model calls).
* **With execbudget**: the same graph with ``chat_model`` (every call held at its worst
  case) and ``graph_config()`` (every super-step charged on the run): the run's step
  budget stops it at the super-step that would exceed it, before that step's model call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from ..errors import BudgetExceeded
from ..units import units_to_money
from ._harness import Harness, Probe, SafetyCap, SafetyCapReached, instructions, stop_from_denial
from ._policies import MODEL, ORG, amount, org_rule, run_rule
from .model import ScenarioResult, Stop

__all__ = ["DEMO", "PATTERN", "SMALL", "Size", "run"]

PATTERN: Final = "runaway-recursion"
TITLE: Final = "Runaway recursion"
_RUN: Final = "research-agent"
_QUESTION: Final = "What was Acme's churn rate in Q3? Use the knowledge base."


@dataclass(frozen=True, slots=True)
class Size:
    #: provider requests after which the simulator stops the unbudgeted agent
    safety_requests: int = 80
    #: the run's step budget (super-steps: one agent or tools node each)
    steps: int = 20
    #: the run's spend budget
    run_cost: str = "0.10 USD"
    #: length of the agent's system prompt
    prompt_tokens: int = 1_500


DEMO: Final = Size()
SMALL: Final = Size(safety_requests=24, steps=8, run_cost="0.03 USD", prompt_tokens=600)


def policy(size: Size) -> dict[str, Any]:
    return {
        "scopes": [
            org_rule(),
            run_rule(f"run:{_RUN}", steps=size.steps, cost=size.run_cost, max_output_tokens=256),
        ]
    }


def _default_recursion_limit() -> int:
    try:
        from langgraph._internal._config import DEFAULT_RECURSION_LIMIT

        return int(DEFAULT_RECURSION_LIMIT)
    except (ImportError, TypeError, ValueError):  # pragma: no cover - other langgraph versions
        return 10_007


def _graph(llm: Any, tool_errors: Any) -> Any:
    """The ReAct loop: agent → tools → agent ... until the model stops calling tools."""

    @tool
    def search_kb(query: str) -> str:
        """Search Acme's internal knowledge base."""
        raise ConnectionError("knowledge base unreachable (503)")

    model = llm.bind_tools([search_kb])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([search_kb], handle_tool_errors=tool_errors))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


@contextlib.contextmanager
def _quiet_callback_errors() -> Iterator[None]:
    """
    LangChain logs every exception a callback raises as a warning, then re-raises it; the
    step denial is the expected end of this run, reported in the table, so the log line
    would only be noise.
    """
    log = logging.getLogger("langchain_core.callbacks.manager")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _chat_openai(h: Harness, probe: Probe) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=MODEL,
        base_url=h.provider.openai_base_url,
        api_key="fake-key",
        max_retries=0,
        max_tokens=256,
        http_client=h.http_client(probe),
    )


def run(h: Harness, size: Size = DEMO) -> ScenarioResult:
    """Run the agent without budgets, then under the full stack."""
    from langgraph.errors import GraphRecursionError

    from ..integrations.langgraph import chat_model, graph_config, tool_error_handler

    h.provider.configure(tool_call_policy="always")  # the model never gives up on the tool
    inputs = {
        "messages": [
            ("system", instructions(size.prompt_tokens, "research")),
            ("user", _QUESTION),
        ]
    }
    limit = _default_recursion_limit()

    # -- without budgets ----------------------------------------------------------------
    probe = Probe(SafetyCap(size.safety_requests))
    app = _graph(_chat_openai(h, probe), True)
    capped = False
    stop = Stop(None, "the agent gave up on its own")
    with h.recording() as rec:
        try:
            app.invoke(inputs)
        except SafetyCapReached:
            capped = True
            stop = Stop(None, f"the simulator's safety cap ({size.safety_requests:,} requests)")
        except GraphRecursionError:  # pragma: no cover - needs a safety cap above ~5,000
            stop = Stop(None, f"LangGraph's recursion_limit ({limit:,} super-steps)")
    without = h.variant(
        rec,
        "no budgets",
        stop,
        capped=capped,
        metrics={"recursion_limit": limit},
        notes=[
            f"LangGraph's default recursion_limit is {limit:,} super-steps: about "
            f"{limit // 2:,} model calls before it would stop on its own",
        ],
    )

    # -- with the full stack ------------------------------------------------------------
    enforcer = h.enforcer(policy(size))
    tag = h.tag(PATTERN)
    probe = Probe(SafetyCap(size.safety_requests))
    app = _graph(chat_model(_chat_openai(h, probe)), tool_error_handler())
    capped = False
    stop = Stop(None, "the agent gave up on its own")
    with h.recording() as rec, _quiet_callback_errors():
        try:
            with enforcer.scope("org", ORG, instance=tag), enforcer.run(_RUN, instance=tag):
                app.invoke(inputs, graph_config())
        except BudgetExceeded as denial:
            stop = stop_from_denial(denial)
        except SafetyCapReached:
            capped = True
            stop = Stop(None, "the simulator's safety cap (not contained)")
    steps = h.books(tag, "run:", "steps")
    budgeted = h.variant(
        rec,
        "execbudget",
        stop,
        capped=capped,
        books=units_to_money(h.books(tag, "run:", "cost")),
        problems=h.check_books(tag),
        metrics={"steps": steps, "step_budget": size.steps, "model_calls": len(rec.records)},
        notes=[
            f"the step budget ran out after {steps} super-steps ({len(rec.records)} model "
            f"calls, as many failed tool calls); the next model call was never sent",
        ],
    )
    return ScenarioResult(
        pattern=PATTERN,
        title=TITLE,
        unit="USD",
        budget=amount(size.run_cost),
        budget_label=f"${amount(size.run_cost)}/run · {size.steps} steps",
        without=without,
        budgeted=budgeted,
        notes=["LangGraph ReAct agent, ChatOpenAI over the real openai SDK; tool down"],
    )
