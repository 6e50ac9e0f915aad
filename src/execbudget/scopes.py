"""
Scope chains and the pure planning of a hold onto them.

A **frame** is one open scope (``org:acme``, ``team:acme/search``, ``run:triage#9f2c``),
linked to its parent. The innermost frame travels in a ``ContextVar``, so asyncio tasks
inherit it and threads do when started through ``execbudget.context``. A hold is planned
onto every frame of the chain, outermost first, so a denial names the highest level that
refused, and no clock or I/O is touched here: planning is pure and cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ledger import LineKey, LineRequest
from .policy import CallCaps, ScopeLimits
from .units import Dimension
from .windows import Window, window_end, window_id

if TYPE_CHECKING:
    from .enforcer import Enforcer


@dataclass(eq=False, slots=True)
class Frame:
    """One open scope of a chain."""

    kind: str
    name: str
    key: str  # the ledger scope: kind:name, or kind:name#instance for one run
    limits: ScopeLimits
    parent: Frame | None
    enforcer: Enforcer
    started: float  # monotonic seconds
    deadline: float | None  # monotonic seconds; never later than the parent's
    depth: int  # runs from the outermost, this one included (0 outside any run)
    is_run: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    # window → (id, end_ms or None, valid_until_ms): window ids change rarely; cache them
    _windows: dict[Window, tuple[str, int | None, int]] = field(default_factory=dict)
    # dimensions of an action → (valid_until_ms, line skeletons): the lines of the chain an
    # action of those dimensions lands on only change when a window rolls over, so the
    # hot path (a step, a tool call, a retry) does not re-walk the chain each time
    _plans: dict[tuple[str, ...], _Plan] = field(default_factory=dict)
    # the expiry rule of a hold on this chain (charge if any scope says so); set on first use
    on_expiry: Any = None

    def chain(self) -> list[Frame]:
        """Outermost first."""
        frames = []
        frame: Frame | None = self
        while frame is not None:
            frames.append(frame)
            frame = frame.parent
        frames.reverse()
        return frames

    def window(self, window: Window, now_ms: int, tz: str) -> tuple[str, int | None]:
        cached = self._windows.get(window)
        if cached is not None and now_ms < cached[2]:
            return cached[0], cached[1]
        wid = window_id(window, now_ms, tz)
        end = window_end(window, now_ms, tz)
        end_ms = None if end is None else int(end.timestamp() * 1000)
        self._windows[window] = (wid, end_ms, end_ms if end_ms is not None else 2**62)
        return wid, end_ms


CURRENT: ContextVar[Frame | None] = ContextVar("execbudget_scope", default=None)


def current_frame() -> Frame | None:
    return CURRENT.get()


def iter_chain(frame: Frame | None) -> Iterator[Frame]:
    """Innermost first (the cheap direction)."""
    while frame is not None:
        yield frame
        frame = frame.parent


def plan_lines(
    frame: Frame | None, amounts: Mapping[str, int], now_ms: int, tz: str
) -> list[LineRequest]:
    """Every ledger line an action of ``amounts`` must hold on, outermost scope first."""
    if frame is None:
        return []
    out: list[LineRequest] = []
    for f in frame.chain():
        budgets = f.limits.lines
        if not budgets:
            continue
        for dim, amount in amounts.items():
            windows = budgets.get(dim)  # type: ignore[call-overload]
            if not windows:
                continue
            for window, limit in windows.items():
                wid, end_ms = f.window(window, now_ms, tz)
                out.append(LineRequest(LineKey(f.key, wid, dim), limit, amount, end_ms))
    return out


#: (line key, limit, dimension, window end ms): a planned line without its amount
_Skeleton = tuple[LineKey, int, str, "int | None"]
_NO_END = 2**62
_MAX_PLANS = 64
_MAX_MEMO = 8


class Planned:
    """
    The planned lines of one amount vector on a chain, shared by every action that repeats
    it (``plan_for``). ``checked``: ``(ttl_s, ttl_ms)`` once the ledger's ``check_reserve``
    accepted these lines with that hold TTL (None until then), so an enforcer validates a
    repeated plan once, not on every step. One tuple, written at once: threads sharing a
    plan never see a TTL paired with another's milliseconds.
    """

    __slots__ = ("checked", "lines")

    def __init__(self, lines: list[LineRequest]) -> None:
        self.lines = lines
        self.checked: tuple[float, int] | None = None


@dataclass(slots=True)
class _Plan:
    """The cached plan of one set of dimensions on a frame (see ``plan_lines_cached``)."""

    valid_until_ms: int
    skeleton: tuple[_Skeleton, ...]
    # amounts → the planned lines, for the few amount vectors that repeat (a step is
    # always {"steps": 1}); the lists are shared, so callers never mutate them
    memo: dict[tuple[int, ...], Planned] = field(default_factory=dict)


def plan_lines_cached(
    frame: Frame | None, amounts: Mapping[str, int], now_ms: int, tz: str
) -> list[LineRequest]:
    """``plan_for(...).lines``; ``[]`` outside any scope."""
    if frame is None:
        return []
    return plan_for(frame, amounts, now_ms, tz).lines


def plan_for(frame: Frame, amounts: Mapping[str, int], now_ms: int, tz: str) -> Planned:
    """
    ``plan_lines`` with the chain walk cached on the frame per set of dimensions.

    The skeleton of the plan (which lines, with which limits and window ids) depends only
    on the chain, the dimensions and the current windows; it is rebuilt when the earliest
    window among its lines ends. The amounts are filled in on every call.
    """
    dims = tuple(amounts)
    plan = frame._plans.get(dims)
    if plan is None or now_ms >= plan.valid_until_ms:
        lines = plan_lines(frame, dict.fromkeys(dims, 0), now_ms, tz)
        valid = _NO_END
        for line in lines:
            if line.window_end_ms is not None and line.window_end_ms < valid:
                valid = line.window_end_ms
        skeleton = tuple((ln.key, ln.limit, ln.key.dimension, ln.window_end_ms) for ln in lines)
        plan = _Plan(valid, skeleton)
        if len(frame._plans) < _MAX_PLANS:
            frame._plans[dims] = plan
    values = tuple(amounts.values())
    found = plan.memo.get(values)
    if found is not None:
        return found
    planned = Planned(
        [LineRequest(key, limit, amounts[dim], end) for key, limit, dim, end in plan.skeleton]
    )
    if len(plan.memo) < _MAX_MEMO:
        plan.memo[values] = planned
    return planned


def call_caps(frame: Frame | None) -> CallCaps:
    """The per-call caps of the whole chain: the tightest of each."""
    caps = CallCaps()
    for f in iter_chain(frame):
        caps = caps.tighten(f.limits.per_call)
    return caps


def deadline_of(frame: Frame | None) -> float | None:
    return None if frame is None else frame.deadline


def limited_dimensions(frame: Frame | None) -> set[Dimension]:
    dims: set[Dimension] = set()
    for f in iter_chain(frame):
        dims.update(f.limits.lines)
    return dims
