"""
Tool-call guards: ``@execbudget.tool`` and ``run.tool(fn)``.

Each *execution* of a guarded tool charges one ``tool_calls`` on the chain before the tool
body runs; a model that asks for five tools at once (parallel tool calls) is charged five,
one per execution, so "tool_calls: 20" means twenty tool bodies run, whatever the batching.

A tool named in the policy gets a line of its own: a rule ``match: "tool:web_search"`` with
``limits: {tool_calls: {day: 1000}}`` caps that tool across every run, on top of the run's
own ``tool_calls``, in the same atomic charge.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, overload

from ..scopes import CURRENT, Frame

if TYPE_CHECKING:
    from ..run import Scope

P = ParamSpec("P")
R = TypeVar("R")

_ONE_TOOL_CALL: Final = {"tool_calls": 1}


def tool_frame(frame: Frame | None, name: str) -> Frame | None:
    """
    The frame a call of tool ``name`` charges: ``frame``, or a ``tool:name`` child of it
    when the policy has limits for that tool (so the charge lands on the tool's lines too).
    """
    if frame is None:
        return None
    enforcer = frame.enforcer
    limits = enforcer.policy.limits_for(f"tool:{name}")
    if not limits.lines:
        return frame
    return Frame(
        "tool",
        name,
        f"tool:{name}",
        limits,
        frame,
        enforcer,
        frame.started,
        frame.deadline,
        frame.depth,
        False,
    )


def charge_tool_call(frame: Frame | None, name: str) -> None:
    """Charge one execution of tool ``name`` on ``frame``'s chain (or deny it)."""
    target = tool_frame(frame, name)
    if target is not None:
        target.enforcer.charge(_ONE_TOOL_CALL, frame=target)


async def acharge_tool_call(frame: Frame | None, name: str) -> None:
    target = tool_frame(frame, name)
    if target is not None:
        await target.enforcer.acharge(_ONE_TOOL_CALL, frame=target)


def guard_tool(
    fn: Callable[P, R], *, scope: Scope | None = None, name: str | None = None
) -> Callable[P, R]:
    """
    ``fn`` wrapped so each execution first charges one tool call.

    With ``scope`` the charge lands on that scope's chain wherever the tool runs (a pool
    thread, another task); without it, on the scope current where the tool is called, and
    a call outside any scope is not budgeted. Coroutine functions get an async wrapper.
    """
    tool_name: str = name or getattr(fn, "__name__", None) or "tool"

    def frame_now() -> Frame | None:
        return scope.frame if scope is not None else CURRENT.get()

    if inspect.iscoroutinefunction(fn):
        afn = cast(Callable[P, Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def aguarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            await acharge_tool_call(frame_now(), tool_name)
            return await afn(*args, **kwargs)

        return cast(Callable[P, R], aguarded)

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        charge_tool_call(frame_now(), tool_name)
        return fn(*args, **kwargs)

    return guarded


@overload
def tool(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tool(
    *, name: str | None = None, scope: Scope | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    scope: Scope | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """
    Decorate a tool so every execution charges one ``tool_calls`` before it runs.

    ``@execbudget.tool`` charges the scope current at call time; ``@execbudget.tool(
    name="search")`` names the tool for per-tool policy lines (``match: "tool:search"``).
    Works on plain and ``async def`` functions.
    """
    if fn is not None:
        return guard_tool(fn, scope=scope, name=name)

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        return guard_tool(f, scope=scope, name=name)

    return decorate
