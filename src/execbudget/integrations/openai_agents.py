"""
OpenAI Agents SDK: turns, tool calls, handoffs and agents-as-tools share one budget.

The SDK counts ``max_turns`` per run and gives every agent-as-tool a fresh 10 turns; it
tracks tokens but never enforces them; it has no run timeout. Here:

* **Model calls** go through an ``execbudget.wrap``-ped ``AsyncOpenAI`` (``chat_model()``
  or ``ModelProvider``), so each is held at its worst case before it is sent — in the top
  agent, in handoff targets and in agents run as tools alike, since they all find the
  run's scope in the context the SDK copies into its tasks.
* ``BudgetHooks`` (``Runner.run(..., hooks=BudgetHooks())``) charges, before the work:
  one ``steps`` per **turn** (the SDK's turn: one model invocation with the tool calls it
  asks for, the same unit as ``max_turns``), one ``tool_calls`` per tool execution (each
  of a parallel batch), and one ``tool_calls`` per handoff (the model calling the
  transfer tool). An exception raised in a run hook propagates out of ``Runner.run``.
* ``as_tool(agent)`` — ``agent.as_tool(...)`` whose every invocation is a **branch** of
  the calling run (one ``fan_out``, one ``concurrency`` while it runs) and a **nested run**
  ``run:<agent name>`` (depth + 1, its own policy limits, drawing from the caller's
  remaining budget at every hold), with ``BudgetHooks`` and a failure handler that lets
  denials through (the SDK's default would hand the denial to the model as text and carry
  on).
* ``run_agent(agent, input)`` — ``Runner.run`` with ``BudgetHooks`` by default, raising the
  typed denial: the SDK re-raises any error from a tool (or a tool hook) as
  ``UserError("Error running tool ...")`` with the denial as its cause; ``unwrap_denial``
  does the same for code that calls ``Runner`` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

try:
    from agents import Agent, FunctionTool, RunContextWrapper, RunHooks, Runner, Tool
    from agents.models.interface import Model, ModelProvider
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.tool import default_tool_error_function
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from . import missing

    raise missing("openai-agents") from exc

from ..errors import BudgetExceeded
from ..loop import acharge_tool_call
from ..scopes import CURRENT, Frame

if TYPE_CHECKING:
    from ..run import Scope

__all__ = [
    "BudgetHooks",
    "BudgetedModelProvider",
    "as_tool",
    "chat_model",
    "raise_denials",
    "run_agent",
    "unwrap_denial",
]

_ONE_STEP: Final = {"steps": 1}


class BudgetHooks(RunHooks[Any]):
    """Run hooks that charge turns, tool calls and handoffs before they happen."""

    def __init__(self, scope: Scope | None = None) -> None:
        self.scope = scope

    def _frame(self) -> Frame | None:
        return self.scope.frame if self.scope is not None else CURRENT.get()

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        frame = self._frame()
        if frame is not None:
            await frame.enforcer.acharge(_ONE_STEP, frame=frame)

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Any, tool: Tool) -> None:
        await acharge_tool_call(self._frame(), str(getattr(tool, "name", "tool")))

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Any, to_agent: Any
    ) -> None:
        await acharge_tool_call(self._frame(), f"handoff:{getattr(to_agent, 'name', 'agent')}")


def raise_denials(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """A tool ``failure_error_function`` that lets a ``BudgetExceeded`` propagate."""
    if isinstance(error, BudgetExceeded):
        raise error
    return default_tool_error_function(ctx, error)


def chat_model(name: str, client: Any, **wrap_options: Any) -> OpenAIChatCompletionsModel:
    """An ``OpenAIChatCompletionsModel`` over ``execbudget.wrap(client)``."""
    from .. import wrap
    from ..invocation._clients import _Wrapped

    wrapped: Any = client if isinstance(client, _Wrapped) else wrap(client, **wrap_options)
    return OpenAIChatCompletionsModel(model=name, openai_client=wrapped)


class BudgetedModelProvider(ModelProvider):
    """
    A ``ModelProvider`` (``RunConfig(model_provider=...)``) that serves every model name
    through one wrapped ``AsyncOpenAI``: agents that name their model by string are held too.
    """

    def __init__(self, client: Any, *, default_model: str = "gpt-4o-mini", **wrap_options: Any):
        from .. import wrap
        from ..invocation._clients import _Wrapped

        self.client: Any = client if isinstance(client, _Wrapped) else wrap(client, **wrap_options)
        self.default_model = default_model

    def get_model(self, model_name: str | None) -> Model:
        return OpenAIChatCompletionsModel(
            model=model_name or self.default_model, openai_client=self.client
        )


def _run_name(agent: Agent[Any]) -> str:
    name = agent.name.replace("#", "-").strip() or "agent"
    return name[:200]


def as_tool(
    agent: Agent[Any],
    tool_name: str | None = None,
    tool_description: str | None = None,
    *,
    run_name: str | None = None,
    branch: bool = True,
    **kwargs: Any,
) -> FunctionTool:
    """
    ``agent.as_tool(...)`` run as a budgeted sub-agent (see the module docstring).

    Other keyword arguments go to ``Agent.as_tool``; ``hooks`` defaults to ``BudgetHooks()``
    and ``failure_error_function`` to ``raise_denials``.
    """
    from ..orchestration import Branch
    from ..run import Scope

    kwargs.setdefault("hooks", BudgetHooks())
    kwargs.setdefault("failure_error_function", raise_denials)
    tool = agent.as_tool(tool_name, tool_description, **kwargs)
    inner = tool.on_invoke_tool
    name = run_name or _run_name(agent)

    async def invoke(ctx: Any, input_json: str) -> Any:
        frame = CURRENT.get()
        if frame is None:
            return await inner(ctx, input_json)
        child = Scope(frame.enforcer, "run", name, instance=True, limits=None, is_run=True)
        if not branch:
            async with child:
                return await inner(ctx, input_json)
        async with Branch(frame, name), child:
            return await inner(ctx, input_json)

    tool.on_invoke_tool = invoke
    return tool


def unwrap_denial(error: BaseException) -> BaseException:
    """The ``BudgetExceeded`` behind the SDK's ``UserError("Error running tool ...")``."""
    seen = 0
    cause: BaseException | None = error
    while cause is not None and seen < 8:
        if isinstance(cause, BudgetExceeded):
            return cause
        cause, seen = cause.__cause__, seen + 1
    return error


async def run_agent(
    agent: Agent[Any], input: Any, *, hooks: RunHooks[Any] | None = None, **kwargs: Any
) -> Any:
    """
    ``Runner.run(agent, input, hooks=BudgetHooks(), **kwargs)``, raising a denial as itself
    rather than wrapped in the SDK's ``UserError``.
    """
    try:
        return await Runner.run(agent, input, hooks=hooks or BudgetHooks(), **kwargs)
    except Exception as error:
        denial = unwrap_denial(error)
        if denial is error:
            raise
        raise denial from None
