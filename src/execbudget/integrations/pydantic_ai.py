"""
pydantic-ai: an agent and all its delegates draw from one hold-before-spend budget.

pydantic-ai's ``UsageLimits`` refuse a request only once a limit is *already* crossed, and
delegates that share ``ctx.usage`` all pass the check together: 32 concurrent delegates on
a 3,000-token limit send about 32,000 tokens (measured in tests/integrations and
bench/bench_loop.py). Here every request is held at its worst case on the scope chain
before it is sent, so concurrent delegates cannot jointly pass a nearly spent budget.

* ``BudgetedModel(model)`` — a ``WrapperModel``: one ``steps`` per model request (a
  pydantic-ai step: a ``ModelRequestNode``; its tool calls follow in ``CallToolsNode``), and
  the request itself goes through an ``execbudget.wrap``-ped SDK client, which holds the
  worst case (input counted offline + ``max_tokens``, clamped to what the budget affords)
  before sending and settles the actual usage after. An OpenAI or Anthropic model whose
  client is not wrapped yet is rebuilt around a wrapped one; any other model is refused
  (its calls could not be held), unless ``trust_unwrapped=True`` (then only ``calls`` and
  ``steps`` are charged: tokens and cost are *not* held — an explicit fail-open).
* ``ExecBudget()`` — a capability: wraps the agent's model like ``BudgetedModel`` on every
  request attempt, and charges one ``tool_calls`` before each tool executes (each call of a
  parallel batch). ``Agent(model, capabilities=[ExecBudget()])``.
* ``openai_model(name, client)`` — ``BudgetedModel(OpenAIChatModel(...))`` over a wrapped
  client, the one-liner for the common case.

Delegation: a tool that runs another agent needs nothing special — the delegate's requests
are held on the scope current in the tool, which is the parent's run (asyncio tasks copy
the context). To give a delegate its own limits and a depth, open a nested run in the tool:
``async with execbudget.run("researcher"): await child.run(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

try:
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
    from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.tools import RunContext, ToolDefinition
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from . import missing

    raise missing("pydantic-ai") from exc

from ..errors import ConfigurationError
from ..scopes import CURRENT, Frame

if TYPE_CHECKING:
    from ..run import Scope

__all__ = ["BudgetedModel", "ExecBudget", "openai_model"]

_ONE_STEP: Final = {"steps": 1}
_UNWRAPPED_CALL: Final = {"steps": 1, "calls": 1}


def _is_wrapped(client: Any) -> bool:
    from ..invocation._clients import _Wrapped

    return isinstance(client, _Wrapped)


def _with_wrapped_client(model: Model, wrap_options: dict[str, Any]) -> Model | None:
    """``model`` rebuilt around an ``execbudget.wrap``-ped client; None if we cannot."""
    from .. import wrap

    client = getattr(model, "client", None)
    if client is None:
        return None
    if _is_wrapped(client):
        return model
    try:
        import openai
    except ImportError:  # pragma: no cover
        openai = None  # type: ignore[assignment]
    if openai is not None and isinstance(client, openai.AsyncOpenAI):
        from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
        from pydantic_ai.providers.openai import OpenAIProvider

        if isinstance(model, OpenAIChatModel | OpenAIResponsesModel):
            provider = OpenAIProvider(openai_client=wrap(client, **wrap_options))
            return type(model)(model.model_name, provider=provider, profile=model.profile)
    try:
        import anthropic
    except ImportError:  # pragma: no cover
        anthropic = None  # type: ignore[assignment]
    if anthropic is not None and isinstance(client, anthropic.AsyncAnthropic):
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        if isinstance(model, AnthropicModel):
            provider_a = AnthropicProvider(anthropic_client=wrap(client, **wrap_options))
            return AnthropicModel(model.model_name, provider=provider_a, profile=model.profile)
    return None


class BudgetedModel(WrapperModel):
    """
    A pydantic-ai model whose every request is charged a step and held before it is sent.

    ``scope`` pins the chain (default: the scope current at each request, which is the
    run the agent — or the delegate's tool — runs in).
    """

    def __init__(
        self,
        wrapped: Model | str,
        *,
        scope: Scope | None = None,
        trust_unwrapped: bool = False,
        **wrap_options: Any,
    ) -> None:
        super().__init__(wrapped)
        inner = self.wrapped
        while isinstance(inner, BudgetedModel):  # never charge a step twice
            inner = inner.wrapped
        rebuilt = _with_wrapped_client(inner, wrap_options)
        if rebuilt is None and not trust_unwrapped:
            raise ConfigurationError(
                f"execbudget cannot hold the calls of {type(inner).__name__}: it has no OpenAI "
                "or Anthropic client to wrap. Use OpenAIChatModel/OpenAIResponsesModel/"
                "AnthropicModel, or pass trust_unwrapped=True to charge only calls and steps "
                "(tokens and cost would then not be held: fail-open)"
            )
        self.wrapped = rebuilt if rebuilt is not None else inner
        self.scope = scope
        self._held_by_client = rebuilt is not None

    def _frame(self) -> Frame | None:
        return self.scope.frame if self.scope is not None else CURRENT.get()

    async def _charge(self) -> None:
        frame = self._frame()
        if frame is not None:
            amounts = _ONE_STEP if self._held_by_client else _UNWRAPPED_CALL
            await frame.enforcer.acharge(amounts, frame=frame)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        await self._charge()
        return await self.wrapped.request(messages, model_settings, model_request_parameters)

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        await self._charge()
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as response_stream:
            yield response_stream


@dataclass
class ExecBudget(AbstractCapability[Any]):
    """
    A capability: every model request of the agent through ``BudgetedModel``, and one
    ``tool_calls`` charged before each tool executes.
    """

    scope: Scope | None = None
    trust_unwrapped: bool = False
    wrap_options: dict[str, Any] = field(default_factory=dict)
    # model → its budgeted wrapper, so a model is rebuilt around a wrapped client once,
    # not on every request attempt (the model is kept alive with its wrapper)
    _wrappers: dict[int, tuple[Model, BudgetedModel]] = field(
        default_factory=dict, init=False, repr=False
    )

    def get_wrapper_model(self, model: Model) -> Model | None:
        if isinstance(model, BudgetedModel):
            return None
        cached = self._wrappers.get(id(model))
        if cached is not None and cached[0] is model:
            return cached[1]
        wrapper = BudgetedModel(
            model, scope=self.scope, trust_unwrapped=self.trust_unwrapped, **self.wrap_options
        )
        if len(self._wrappers) < 64:
            self._wrappers[id(model)] = (model, wrapper)
        return wrapper

    async def before_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: Any,
    ) -> Any:
        from ..loop import acharge_tool_call

        frame = self.scope.frame if self.scope is not None else CURRENT.get()
        await acharge_tool_call(frame, tool_def.name)
        return args


def openai_model(name: str, client: Any, **wrap_options: Any) -> BudgetedModel:
    """``BudgetedModel(OpenAIChatModel(name))`` over ``execbudget.wrap(client)``."""
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from .. import wrap

    wrapped = client if _is_wrapped(client) else wrap(client, **wrap_options)
    return BudgetedModel(OpenAIChatModel(name, provider=OpenAIProvider(openai_client=wrapped)))
