"""
LangGraph and LangChain: one budget for every model call, tool call, super-step, retry and
``Send`` branch of a graph, its subgraphs and every invocation inside a run.

Pieces:

* ``BudgetCallbackHandler`` — a LangChain callback handler with ``raise_error = True`` (a
  handler without it has its exceptions logged and swallowed: the budget would only be
  "enforced" in the logs). Given with ``config={"callbacks": [handler]}`` (or
  ``graph_config()``), it charges, each *before* the work starts:

  - ``steps``: one per LangGraph **super-step**, of the root graph and of every subgraph,
    over the whole run (LangGraph's ``recursion_limit`` counts the same unit but restarts
    at every invocation and every subgraph; ours does not);
  - ``retries``: one per re-attempt of a task by a node ``RetryPolicy``;
  - ``fan_out``: one per ``Send`` task not already admitted by ``admit_sends``, and a
    ``concurrency`` hold while it runs;
  - ``tool_calls``: one per tool execution (each of a parallel batch), plus the tool's
    own line when the policy names it (``match: "tool:<name>"``).

* ``admit_sends(sends)`` — call it in the routing function that returns ``Send`` objects:
  the whole fan-out is admitted (count, projected cost; refused or truncated) before any
  ``Send`` task starts.
* ``chat_model(llm)`` — a ``ChatOpenAI`` whose SDK clients are execbudget-wrapped, so every
  model call is held at its worst case (and ``max_tokens`` clamped) before it is sent.
* ``tool_error_handler()`` — a ``ToolNode(handle_tool_errors=...)`` that reports tool
  errors to the model but lets a denial through (``True`` would swallow it into a message).
* ``retry_policy(...)`` — a ``RetryPolicy`` that never retries a denial (LangGraph's
  default ``retry_on`` retries any exception it does not know, ``BudgetExceeded`` included).

The chain charged is the ``scope`` given to the handler, else the scope current where the
graph runs (LangChain copies the context into its worker threads and tasks).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.runnables import RunnableConfig
    from langgraph.types import RetryPolicy, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from . import missing

    raise missing("langgraph") from exc

from ..errors import BudgetExceeded
from ..loop import charge_tool_call
from ..orchestration._admission import OnExcess, admit, settings_for
from ..orchestration._drive import drive
from ..scopes import CURRENT, Frame, limited_dimensions
from ..units import Dimension

if TYPE_CHECKING:
    from ..enforcer import Hold
    from ..run import Scope

__all__ = [
    "BudgetCallbackHandler",
    "admit_sends",
    "chat_model",
    "graph_config",
    "retry_policy",
    "tool_error_handler",
]

_PUSH: Final = "__pregel_push"
_ADMITTED_KEY: Final = "langgraph.admitted_sends"
_ONE_STEP: Final = {"steps": 1}
_ONE_RETRY: Final = {"retries": 1}
_ONE_BRANCH: Final = {"fan_out": 1}
_ONE_SLOT: Final = {"concurrency": 1}
#: tasks remembered for retry detection; old ones are forgotten first
_MAX_TASKS: Final = 50_000

L = TypeVar("L")


class BudgetCallbackHandler(BaseCallbackHandler):
    """
    Charges LangGraph super-steps, task retries, ``Send`` branches and tool calls on the
    budget, and raises the denial into the graph (``raise_error = True``).

    One handler may serve many invocations and threads: its bookkeeping is keyed by
    LangChain run ids and guarded by a lock.
    """

    raise_error = True
    #: called in the caller's thread or task, never handed to an executor, so a denial is
    #: raised where the work would start and the current scope is the graph's
    run_inline = True

    def __init__(
        self,
        scope: Scope | None = None,
        *,
        steps: bool = True,
        tools: bool = True,
        sends: bool = True,
        retries: bool = True,
    ) -> None:
        super().__init__()
        self.scope = scope
        self.count_steps = steps
        self.count_tools = tools
        self.count_sends = sends
        self.count_retries = retries
        self._lock = threading.Lock()
        # task checkpoint namespace → run id of the graph that runs it
        self._tasks: OrderedDict[str, UUID | None] = OrderedDict()
        # (graph run id, super-step) already charged
        self._steps: OrderedDict[tuple[UUID | None, int], None] = OrderedDict()
        # task namespace → the denial that stopped it (its retries re-raise it, unpaid)
        self._denied: dict[str, BudgetExceeded] = {}
        # node run id → concurrency hold of a Send task
        self._slots: dict[UUID, Hold] = {}

    # -- where to charge -------------------------------------------------------------
    def _frame(self) -> Frame | None:
        return self.scope.frame if self.scope is not None else CURRENT.get()

    # -- LangGraph tasks -------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A graph node starting: a task's first run, or a retry of it (see module)."""
        md = metadata or {}
        ns = md.get("langgraph_checkpoint_ns")
        step = md.get("langgraph_step")
        if ns is None or step is None or md.get("langgraph_node") is None:
            return
        with self._lock:
            if ns in self._denied:
                raise self._denied[ns]  # a retry of a denied task: denied again, for free
            graph = self._tasks.get(ns, _MISSING)
            if graph is _MISSING:
                first = True
                self._tasks[ns] = parent_run_id
                _trim(self._tasks)
            elif graph == parent_run_id:
                first = False  # the same task started again under the same graph: a retry
            else:
                return  # a runnable inside a task (inner chains share the task's namespace)
            new_step = (parent_run_id, int(step)) not in self._steps
            if new_step:
                self._steps[(parent_run_id, int(step))] = None
                _trim(self._steps)
        frame = self._frame()
        if frame is None:
            return
        enforcer = frame.enforcer
        push = _PUSH in (md.get("langgraph_triggers") or ())
        try:
            if new_step and self.count_steps:
                enforcer.charge(_ONE_STEP, frame=frame)
            if not first and self.count_retries:
                enforcer.charge(_ONE_RETRY, frame=frame)
            if push and self.count_sends:
                if first and not _consume_admitted(frame):
                    enforcer.charge(_ONE_BRANCH, frame=frame)
                if Dimension.CONCURRENCY in limited_dimensions(frame):
                    slot = enforcer.hold(_ONE_SLOT, frame=frame)
                    with self._lock:
                        self._slots[run_id] = slot
        except BudgetExceeded as denial:
            with self._lock:
                self._denied[ns] = denial
            raise

    def _release(self, run_id: UUID) -> None:
        with self._lock:
            slot = self._slots.pop(run_id, None)
        if slot is not None:
            slot.release()

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._release(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._release(run_id)

    # -- tools -----------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """One tool execution: charged before the tool body runs (LangChain calls this first)."""
        if not self.count_tools:
            return
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        charge_tool_call(self._frame(), str(name))


_MISSING: Final[Any] = object()


def _trim(bounded: OrderedDict[Any, Any]) -> None:
    while len(bounded) > _MAX_TASKS:
        bounded.popitem(last=False)


_admitted_lock = threading.Lock()


def _consume_admitted(frame: Frame) -> bool:
    """Take one ``Send`` already counted by ``admit_sends`` on this frame, if any is left."""
    with _admitted_lock:
        left = frame.attrs.get(_ADMITTED_KEY, 0)
        if left <= 0:
            return False
        frame.attrs[_ADMITTED_KEY] = left - 1
        return True


def admit_sends(
    sends: Sequence[Send],
    *,
    item_cost: object | None = None,
    on_excess: OnExcess | None = None,
    scope: Scope | None = None,
) -> list[Send]:
    """
    Admit a ``Send`` fan-out before any of its tasks starts; return the sends to run.

    Use it in the routing function: ``return admit_sends([Send("work", x) for x in xs])``.
    The count is checked against the ``fan_out`` room and ``count × item_cost`` against the
    ``cost`` room; a fan-out that does not fit raises ``FanOutExceeded`` here, in the router,
    so no ``Send`` task starts (or, with ``fan_out.on_excess: truncate``, the first sends
    that fit are returned). The admitted sends are charged now, and the callback handler
    does not charge their tasks again.
    """
    frame = scope.frame if scope is not None else CURRENT.get()
    if frame is None:
        return list(sends)
    settings = settings_for(frame, item_cost, on_excess)
    admission = drive(
        admit(frame, sends, settings, max_concurrency=None, default_workers=None, take_slots=False),
        frame,
    )
    admitted = list(admission.items)
    if admission.fan_out_hold is not None:
        admission.fan_out_hold.commit({"fan_out": len(admitted)})
        with _admitted_lock:
            frame.attrs[_ADMITTED_KEY] = frame.attrs.get(_ADMITTED_KEY, 0) + len(admitted)
    return admitted


def tool_error_handler(
    inner: bool | str | Callable[[Exception], str] = True,
) -> Callable[[Exception], str]:
    """
    A ``ToolNode(handle_tool_errors=...)`` value that turns tool errors into messages for
    the model like ``inner`` does, but lets a ``BudgetExceeded`` through: with
    ``handle_tool_errors=True`` a tool-call denial would become a ToolMessage the model
    reads, and the agent would carry on as if nothing had been refused.
    """
    from langgraph.prebuilt.tool_node import TOOL_CALL_ERROR_TEMPLATE

    def handle(error: Exception) -> str:
        if isinstance(error, BudgetExceeded):
            raise error
        if callable(inner):
            return inner(error)
        if isinstance(inner, str):
            return inner
        return TOOL_CALL_ERROR_TEMPLATE.format(error=repr(error))

    return handle


def retry_policy(
    *,
    retry_on: Callable[[Exception], bool] | None = None,
    **kwargs: Any,
) -> RetryPolicy:
    """
    A node ``RetryPolicy`` that never retries a ``BudgetExceeded`` (other arguments as
    LangGraph's). Each re-attempt is charged as one ``retries`` by the callback handler.
    """
    from langgraph._internal._retry import default_retry_on

    inner = retry_on or default_retry_on

    def on(exc: Exception) -> bool:
        return not isinstance(exc, BudgetExceeded) and inner(exc)

    return RetryPolicy(retry_on=on, **kwargs)


def graph_config(
    scope: Scope | None = None,
    *,
    base: RunnableConfig | None = None,
    handler: BudgetCallbackHandler | None = None,
) -> RunnableConfig:
    """
    A ``RunnableConfig`` for ``graph.invoke(input, graph_config())``: ``base`` plus the
    budget callback handler, and ``max_concurrency`` lowered to the ``concurrency`` room
    of the chain (so parallel tasks wait for a slot in LangGraph instead of being denied).
    """
    config: dict[str, Any] = dict(base or {})
    callbacks = list(config.get("callbacks") or [])
    callbacks.append(handler or BudgetCallbackHandler(scope))
    config["callbacks"] = callbacks
    frame = scope.frame if scope is not None else CURRENT.get()
    if frame is not None and Dimension.CONCURRENCY in limited_dimensions(frame):
        room = frame.enforcer.remaining(frame).get("concurrency")
        if room is not None:
            current = config.get("max_concurrency")
            config["max_concurrency"] = max(1, room if current is None else min(current, room))
    return cast(RunnableConfig, config)


class _Raw:
    """What ``with_raw_response.create`` returns, over a budgeted call: ``parse()`` gives it."""

    headers: dict[str, str] = {}  # noqa: RUF012 - read-only, no headers of a wrapped call
    http_response = None

    def __init__(self, parsed: Any) -> None:
        self._parsed = parsed

    def parse(self) -> Any:
        return self._parsed


class _RawCreate:
    __slots__ = ("_create",)

    def __init__(self, create: Callable[..., Any]) -> None:
        self._create = create

    def create(self, **kwargs: Any) -> _Raw:
        return _Raw(self._create(**kwargs))


class _AsyncRawCreate(_RawCreate):
    __slots__ = ()

    async def create(self, **kwargs: Any) -> _Raw:  # type: ignore[override]
        return _Raw(await self._create(**kwargs))


class _Unbudgeted:
    """A client path execbudget does not guard: using it raises instead of spending."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"{self._what}.{name} is not budgeted by execbudget; call create() (LangChain: "
            "drop response_format/structured output or budget that call by hand)"
        )


class _Guarded(_Unbudgeted):
    """
    A resource with a budgeted ``create`` (also reached as ``with_raw_response.create``,
    which LangChain uses for every non-streamed call). Any other method raises: it would
    send a request the budget never saw, so it fails closed instead.
    """

    def __init__(self, resource: Any, what: str, is_async: bool) -> None:
        super().__init__(what)
        self.create = resource.create
        self.with_raw_response = (_AsyncRawCreate if is_async else _RawCreate)(resource.create)


class _GuardedRoot:
    """The ``root_client`` ChatOpenAI sees: chat completions and responses, both budgeted."""

    def __init__(self, wrapped: Any, is_async: bool) -> None:
        self._wrapped = wrapped
        self.chat = type("chat", (), {})()
        self.chat.completions = _Guarded(wrapped.chat.completions, "chat.completions", is_async)
        self.responses = _Guarded(wrapped.responses, "responses", is_async)
        self.beta = _Unbudgeted("beta")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


def chat_model(llm: L, **wrap_options: Any) -> L:
    """
    A copy of a ``ChatOpenAI`` whose SDK clients go through ``execbudget.wrap``: every model
    call of the graph is held at its worst case, with ``max_tokens`` clamped, before it is
    sent; a denial raises out of ``invoke`` like an SDK error (no callback involved, so
    nothing can swallow it). ``wrap_options`` go to ``execbudget.wrap`` (``retries``, ...).

    ChatOpenAI paths that bypass ``create`` (``response_format`` parsing, the beta stream
    helper) raise ``NotImplementedError`` rather than send an unbudgeted request.
    """
    from .. import wrap

    update: dict[str, Any] = {}
    root = getattr(llm, "root_client", None)
    aroot = getattr(llm, "root_async_client", None)
    if root is not None:
        guarded = _GuardedRoot(wrap(root, **wrap_options), is_async=False)
        update["root_client"] = guarded
        update["client"] = guarded.chat.completions
    if aroot is not None:
        aguarded = _GuardedRoot(wrap(aroot, **wrap_options), is_async=True)
        update["root_async_client"] = aguarded
        update["async_client"] = aguarded.chat.completions
    if not update:
        raise TypeError(f"chat_model() needs a ChatOpenAI-like model with SDK clients, got {llm!r}")
    copy: L = llm.model_copy(update=update)  # type: ignore[attr-defined]
    return copy
