"""
``Scope``: an open budgeted scope, used as ``with`` or ``async with``.

Opening a scope links a new frame to the current one: its limits come from the policy
(every rule matching ``kind:name``) tightened by any inline limits; its deadline is its own
time budget or the parent's, whichever ends first; a run's depth is its parent's plus one,
checked against every depth limit on the chain. Under ``async with`` the deadline cancels
the block: the body is cancelled when time runs out and ``DeadlineExceeded`` is raised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from .errors import ConfigurationError, DeadlineExceeded, StepBudgetExceeded
from .scopes import CURRENT, Frame

if TYPE_CHECKING:
    from .enforcer import Decision, Enforcer, Hold
    from .loop import Steps
    from .orchestration import Branch, FanOutResult

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class Scope:
    """A scope of the budget chain; ``execbudget.run(...)`` and ``Enforcer.scope(...)``."""

    def __init__(
        self,
        enforcer: Enforcer,
        kind: str,
        name: str,
        *,
        instance: str | bool,
        limits: Mapping[str, Any] | None,
        is_run: bool,
    ) -> None:
        if not kind or not set(kind) <= _KIND_CHARS:
            raise ConfigurationError(
                f"scope kind {kind!r} must be lower-case letters, digits, '-' or '_'"
            )
        if not name or "#" in name or len(name) > 200:
            raise ConfigurationError(f"scope name {name!r} must be 1–200 characters without '#'")
        self.enforcer = enforcer
        self.kind = kind
        self.name = name
        self.is_run = is_run
        self._inline = limits
        if instance is True:
            instance = uuid.uuid4().hex[:12]
        self.instance = instance or None
        self._frame: Frame | None = None
        self._token: Token[Frame | None] | None = None
        self._timeout: asyncio.Timeout | None = None

    # -- identity ------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The ledger scope: ``kind:name`` or ``kind:name#instance``."""
        base = f"{self.kind}:{self.name}"
        return f"{base}#{self.instance}" if self.instance else base

    @property
    def frame(self) -> Frame:
        if self._frame is None:
            raise ConfigurationError(f"scope {self.key} is not open; use it in a with block")
        return self._frame

    # -- opening and closing -------------------------------------------------------------
    def _open(self) -> Frame:
        if self._frame is not None:
            raise ConfigurationError(f"scope {self.key} is already open; open a new one")
        enforcer = self.enforcer
        parent = CURRENT.get()
        enforcer.check_deadline(parent)
        limits = enforcer.limits_for(f"{self.kind}:{self.name}", self._inline)
        now = enforcer.clock.monotonic()
        deadline = parent.deadline if parent is not None else None
        if limits.time_ms is not None:
            own = now + limits.time_ms / 1000
            deadline = own if deadline is None else min(deadline, own)
        depth = (parent.depth if parent is not None else 0) + (1 if self.is_run else 0)
        frame = Frame(
            self.kind,
            self.name,
            self.key,
            limits,
            parent,
            enforcer,
            now,
            deadline,
            depth,
            self.is_run,
        )
        if self.is_run:
            for f in frame.chain():
                if f.limits.depth is not None and depth > f.limits.depth:
                    raise StepBudgetExceeded(
                        scope=f.key,
                        dimension="depth",
                        limit=f.limits.depth,
                        spent=depth - 1,
                        held=0,
                        requested=1,
                        reason="cap",
                        hint=f"raise the depth limit of {f.kind}:{f.name} or nest fewer runs",
                    )
        return frame

    def __enter__(self) -> Scope:
        self._frame = self._open()
        self._token = CURRENT.set(self._frame)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            CURRENT.reset(self._token)
            self._token = None

    async def __aenter__(self) -> Scope:
        self.__enter__()
        remaining = self.remaining_time()
        if remaining is not None:
            self._timeout = asyncio.timeout(max(0.0, remaining))
            await self._timeout.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            if self._timeout is not None:
                timeout, self._timeout = self._timeout, None
                try:
                    await timeout.__aexit__(exc_type, exc, tb)
                except TimeoutError as err:
                    if timeout.expired():
                        raise self._deadline_error() from err
                    raise
        finally:
            self.__exit__()

    def _deadline_error(self) -> DeadlineExceeded:
        try:
            self.enforcer.check_deadline(self.frame)
        except DeadlineExceeded as err:
            return err
        frame = self.frame  # the asyncio timer fired a hair before our clock agrees
        return DeadlineExceeded(
            scope=frame.key,
            dimension="time",
            limit="deadline",
            spent="deadline reached",
            held="0s",
            requested="more time",
            reason="deadline",
        )

    # -- time ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.enforcer.clock.monotonic() - self.frame.started

    def remaining_time(self) -> float | None:
        """Seconds left before the chain's nearest deadline; None if there is none."""
        deadline = self.frame.deadline
        return None if deadline is None else deadline - self.enforcer.clock.monotonic()

    @property
    def depth(self) -> int:
        return self.frame.depth

    # -- actions -------------------------------------------------------------------------
    def hold(self, amounts: Mapping[str, Any], **kwargs: Any) -> Hold:
        return self.enforcer.hold(amounts, frame=self.frame, **kwargs)

    def try_hold(self, amounts: Mapping[str, Any], **kwargs: Any) -> Decision:
        return self.enforcer.try_hold(amounts, frame=self.frame, **kwargs)

    async def ahold(self, amounts: Mapping[str, Any], **kwargs: Any) -> Hold:
        return await self.enforcer.ahold(amounts, frame=self.frame, **kwargs)

    def step(self, n: int = 1) -> None:
        """Count ``n`` agent-loop iterations (denied when the step budget is spent)."""
        self.enforcer.charge({"steps": n}, frame=self.frame)

    def retry(self, n: int = 1) -> None:
        """Count a re-attempt of a failed model or tool call."""
        self.enforcer.charge({"retries": n}, frame=self.frame)

    def tool_call(self, n: int = 1) -> None:
        """Count tool executions (parallel tool calls count one each)."""
        self.enforcer.charge({"tool_calls": n}, frame=self.frame)

    async def astep(self, n: int = 1) -> None:
        await self.enforcer.acharge({"steps": n}, frame=self.frame)

    async def aretry(self, n: int = 1) -> None:
        await self.enforcer.acharge({"retries": n}, frame=self.frame)

    async def atool_call(self, n: int = 1) -> None:
        await self.enforcer.acharge({"tool_calls": n}, frame=self.frame)

    def remaining(self) -> dict[str, int]:
        return self.enforcer.remaining(self.frame)

    # -- loop and orchestration (the logic lives in execbudget.loop / .orchestration) ---
    def steps(self, *, quiet: bool = False) -> Steps:
        """``for step in run.steps():`` — one step charged before each iteration."""
        from .loop import Steps

        return Steps(self, quiet=quiet)

    def tool(self, fn: Callable[P, R], /, *, name: str | None = None) -> Callable[P, R]:
        """``fn`` charging one ``tool_calls`` on this scope's chain per execution."""
        from .loop import guard_tool

        return guard_tool(fn, scope=self, name=name)

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        max_concurrency: int | None = None,
        item_cost: object | None = None,
        on_excess: Literal["refuse", "truncate"] | None = None,
        return_exceptions: bool = False,
        name: str | None = None,
    ) -> FanOutResult[R]:
        """A fan-out over threads, admitted by count and projected cost before it starts."""
        from .orchestration import fan_out_map

        return fan_out_map(
            self,
            fn,
            items,
            max_concurrency=max_concurrency,
            item_cost=item_cost,
            on_excess=on_excess,
            return_exceptions=return_exceptions,
            name=name,
        )

    async def amap(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T],
        *,
        max_concurrency: int | None = None,
        item_cost: object | None = None,
        on_excess: Literal["refuse", "truncate"] | None = None,
        return_exceptions: bool = False,
        name: str | None = None,
    ) -> FanOutResult[R]:
        """The asyncio twin of ``map``: tasks, cancelled at the deadline."""
        from .orchestration import fan_out_amap

        return await fan_out_amap(
            self,
            fn,
            items,
            max_concurrency=max_concurrency,
            item_cost=item_cost,
            on_excess=on_excess,
            return_exceptions=return_exceptions,
            name=name,
        )

    def branch(self, name: str | None = None) -> Branch:
        """One branch started by hand (``with``/``async with``): fan_out + concurrency."""
        from .orchestration import Branch

        return Branch(self.frame, name)

    def __repr__(self) -> str:
        return f"<Scope {self.key} depth={self._frame.depth if self._frame else '?'}>"
