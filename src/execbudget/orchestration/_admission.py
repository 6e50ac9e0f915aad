"""
Fan-out admission, written once without I/O and driven by a sync or an async shell.

Before any branch of a fan-out starts, admission answers three questions against the
whole scope chain:

1. **Count.** Does the number of items fit the ``fan_out`` room left (branches started
   over the scope's life)? If not, the fan-out is refused, or truncated to the room when
   the policy says ``fan_out.on_excess: truncate``.
2. **Projected cost.** Given an estimate of one branch (``item_cost`` argument, the
   scope's ``fan_out.item_cost`` rule, or the policy-wide one), does ``items × estimate``
   fit the ``cost`` room left? If not: refused (or truncated to what fits). This is a
   check against the room, not a hold: each branch's model calls still hold their own
   worst case before they run, which is what keeps spend under the cap; the projection
   only keeps a doomed fan-out from starting and burning half the budget first.
3. **Concurrency.** How many branches may run at once: ``max_concurrency``, lowered to
   the ``concurrency`` room. Each worker holds one ``concurrency`` while it runs branches
   and releases it when it has no more to run.

The admitted count is then *held* on ``fan_out`` atomically (two fan-outs racing for the
same room cannot both pass) and settled with the number of branches actually started.

The logic is a generator that yields I/O requests (``ReadLines``, ``TryHold``, ``Release``)
and receives their answers, so the sync and async faces share it (DESIGN §7; psycopg's
style).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from ..errors import ConfigurationError, FanOutExceeded
from ..ledger import LineKey, LineState, OnExpiry
from ..scopes import Frame, iter_chain, limited_dimensions, plan_lines
from ..units import Dimension, display, money_to_units, parse_money, units_to_money

if TYPE_CHECKING:
    from ..enforcer import Decision, Hold

T = TypeVar("T")
OnExcess = Literal["refuse", "truncate"]

#: attempts to take the fan-out hold in truncate mode when a concurrent fan-out keeps
#: taking the room we just read (each attempt re-reads the room)
_HOLD_ATTEMPTS: Final = 4
#: a fan-out hold outlives the time left on the chain by this much (it is charged in full
#: if it ever expires, so a crashed fan-out still counts its admitted branches)
_HOLD_MARGIN_S: Final = 60.0


# -- I/O requests ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReadLines:
    """Read the books of these ledger lines; the answer is a ``list[LineState]``."""

    keys: tuple[LineKey, ...]


@dataclass(frozen=True, slots=True)
class TryHold:
    """Hold ``amounts`` on the frame's chain; the answer is a ``Decision``."""

    amounts: dict[str, int]
    ttl_s: float | None = None
    on_expiry: OnExpiry | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Release a hold taken earlier in the admission (it was refused after all)."""

    hold: Hold


IO = ReadLines | TryHold | Release


# -- results ---------------------------------------------------------------------------
@dataclass(slots=True)
class FanOutReport:
    """What a fan-out asked for, what it was allowed, and what ran."""

    #: items handed in; ``None`` when an iterator had more than we read
    offered: int | None
    #: branches allowed to start
    admitted: int
    #: branches run at once (``max_concurrency`` lowered to the ``concurrency`` room)
    workers: int = 0
    #: branches that actually started (set when the fan-out ends)
    started: int = 0
    #: why fewer than ``offered`` were admitted (``None`` when all were)
    reason: str | None = None
    #: ``admitted × item_cost`` when a per-item estimate was known
    projected_cost: Decimal | None = None

    @property
    def truncated(self) -> bool:
        return self.offered is None or self.admitted < self.offered


@dataclass(slots=True)
class Admission(Generic[T]):
    """An admitted fan-out: its items, its report, and the holds to settle at the end."""

    items: Sequence[T]
    report: FanOutReport
    fan_out_hold: Hold | None = None
    slots: list[Hold] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FanOutSettings:
    item_cost: int | None  # nano-units
    on_excess: OnExcess


def settings_for(
    frame: Frame, item_cost: object | None = None, on_excess: OnExcess | None = None
) -> FanOutSettings:
    """
    The estimate and excess policy of a fan-out started from ``frame``: the arguments,
    else the innermost scope rule that sets them, else the policy-wide ``fan_out``.
    """
    policy = frame.enforcer.policy
    cost: int | None = None
    if item_cost is not None:
        cost = money_to_units(parse_money(item_cost, currency=policy.currency, what="item_cost"))
    excess: OnExcess | None = on_excess
    if excess is not None and excess not in ("refuse", "truncate"):
        raise ConfigurationError(f"on_excess must be 'refuse' or 'truncate', got {excess!r}")
    for f in iter_chain(frame):
        rule = f.limits.fan_out
        if cost is None:
            cost = rule.item_cost
        if excess is None:
            excess = rule.on_excess
    if cost is None:
        cost = policy.fan_out_item_cost
    return FanOutSettings(cost, excess or policy.spec.fan_out.on_excess)


# -- room ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Room:
    """The least room of one dimension on the chain, and the line that has it."""

    left: int
    key: LineKey
    limit: int
    spent: int
    held: int


def _tightest(frame: Frame, dim: str, states: list[LineState], now_ms: int) -> Room | None:
    lines = plan_lines(frame, {dim: 0}, now_ms, frame.enforcer.policy.timezone)
    found = {s.key: s for s in states}
    best: Room | None = None
    for line in lines:
        state = found.get(line.key)
        spent, held = (0, 0) if state is None else (state.spent, state.held)
        limit = line.limit if state is None else state.limit
        left = max(0, limit - spent - held)
        if state is not None and state.blocked:
            left = 0
        if best is None or left < best.left:
            best = Room(left, line.key, limit, spent, held)
    return best


def _refusal(room: Room, dim: str, requested: int, currency: str, *, why: str) -> FanOutExceeded:
    return FanOutExceeded(
        scope=room.key.scope,
        dimension=dim,
        limit=display(dim, room.limit, currency),
        spent=display(dim, room.spent, currency),
        held=display(dim, room.held, currency),
        requested=display(dim, requested, currency),
        window=room.key.window,
        reason="projected" if dim == Dimension.COST else "limit",
        hint=why,
    )


def _take(items: Iterable[T], limit: int | None) -> tuple[list[T], bool]:
    """Up to ``limit`` items (all when None), and whether the iterable had more."""
    if limit is None:
        return list(items), False
    taken = list(itertools.islice(items, limit + 1))
    if len(taken) > limit:
        return taken[:limit], True
    return taken, False


# -- the admission ---------------------------------------------------------------------
def admit(
    frame: Frame,
    items: Iterable[T],
    settings: FanOutSettings,
    *,
    max_concurrency: int | None,
    default_workers: int | None,
    take_slots: bool = True,
) -> Generator[IO, Any, Admission[T]]:
    """
    Admit a fan-out of ``items`` from ``frame`` (see the module docstring).

    Raises ``FanOutExceeded`` before anything starts when the fan-out is refused; the
    denial names the scope whose room was too small and what was asked. With
    ``take_slots=False`` no ``concurrency`` is held (the caller holds it per branch, as
    the LangGraph integration does for each ``Send`` task).
    """
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigurationError(f"max_concurrency must be at least 1, got {max_concurrency}")
    enforcer = frame.enforcer
    currency = enforcer.policy.currency
    limited = limited_dimensions(frame)
    count_limited = Dimension.FAN_OUT in limited
    cost_checked = settings.item_cost is not None and Dimension.COST in limited
    truncate = settings.on_excess == "truncate"
    sized = isinstance(items, Sized)
    offered_total = len(items) if isinstance(items, Sized) else None
    pending: Iterable[T] = items
    read_dims: dict[str, int] = {
        d.value: 0 for d in (Dimension.FAN_OUT, Dimension.COST) if d in limited
    }
    chain_keys = tuple(
        line.key
        for line in plan_lines(frame, read_dims, enforcer.clock.now_ms(), enforcer.policy.timezone)
    )
    taken: list[T] | None = None
    more = False
    fan_out_hold: Hold | None = None
    report: FanOutReport | None = None

    for attempt in range(_HOLD_ATTEMPTS):
        count_room: Room | None = None
        cost_room: Room | None = None
        if cost_checked or (count_limited and (truncate or not sized)):
            states: list[LineState] = yield ReadLines(chain_keys)
            now_ms = enforcer.clock.now_ms()
            if count_limited:
                count_room = _tightest(frame, Dimension.FAN_OUT, states, now_ms)
            if cost_checked:
                cost_room = _tightest(frame, Dimension.COST, states, now_ms)
        if taken is None:
            # Read no more of an iterator than the room can admit (plus one, to tell
            # "exactly full" from "too many"): a generator of 10,000 items is not consumed.
            taken, more = _take(pending, count_room.left if count_room and not sized else None)
        offered = None if more else (offered_total if offered_total is not None else len(taken))
        wanted = len(taken) + (1 if more else 0)

        admitted = len(taken)
        reason: str | None = "the iterator had more items than the fan_out room" if more else None
        if count_room is not None and wanted > count_room.left:
            if not truncate:
                raise _refusal(
                    count_room,
                    Dimension.FAN_OUT,
                    wanted,
                    currency,
                    why=f"{'more than ' if more else ''}{wanted:,} branches were asked for and "
                    f"{count_room.left:,} may still start; raise the fan_out limit of "
                    f"{count_room.key.scope.split('#')[0]}, pass fewer items, or set "
                    "fan_out.on_excess: truncate",
                )
            admitted = min(admitted, count_room.left)
            reason = f"fan_out room on {count_room.key.scope} is {count_room.left:,}"
        item_cost = settings.item_cost
        if cost_room is not None and item_cost:
            affordable = cost_room.left // item_cost
            if admitted > affordable:
                if not truncate:
                    raise _refusal(
                        cost_room,
                        Dimension.COST,
                        admitted * item_cost,
                        currency,
                        why=f"{admitted:,} branches at an estimated "
                        f"{display('cost', item_cost, currency)} each project "
                        f"{display('cost', admitted * item_cost, currency)}, more than the "
                        f"{display('cost', cost_room.left, currency)} left; pass fewer "
                        "items, lower the estimate, or set fan_out.on_excess: truncate",
                    )
                admitted = affordable
                reason = (
                    f"cost room on {cost_room.key.scope} is "
                    f"{display('cost', cost_room.left, currency)}, "
                    f"{affordable:,} branches at {display('cost', item_cost, currency)}"
                )
        if admitted == 0 and wanted > 0:
            room = (
                cost_room if cost_room is not None and reason and "cost" in reason else count_room
            )
            assert room is not None
            dim = Dimension.COST if room is cost_room else Dimension.FAN_OUT
            raise _refusal(
                room,
                dim,
                wanted if dim is Dimension.FAN_OUT else wanted * (item_cost or 0),
                currency,
                why=f"no branch can start: {reason}",
            )
        report = FanOutReport(
            offered,
            admitted,
            reason=reason if admitted < wanted else None,
            projected_cost=units_to_money(admitted * item_cost) if item_cost else None,
        )
        if not count_limited or admitted == 0:
            break
        left = frame.deadline - enforcer.clock.monotonic() if frame.deadline else None
        ttl = enforcer.policy.hold_ttl_s
        if left is not None:
            ttl = max(ttl, left + _HOLD_MARGIN_S)
        decision: Decision = yield TryHold(
            {Dimension.FAN_OUT.value: admitted}, ttl_s=ttl, on_expiry=OnExpiry.CHARGE
        )
        if decision.hold is not None:
            fan_out_hold = decision.hold
            break
        assert decision.denial is not None
        if not truncate or attempt == _HOLD_ATTEMPTS - 1:
            raise decision.denial  # a concurrent fan-out took the room we just read
    assert report is not None and taken is not None
    admission = Admission(taken[: report.admitted], report, fan_out_hold)

    # Concurrency: one hold per worker, taken before any branch starts.
    wanted_workers = min(max_concurrency or default_workers or report.admitted, report.admitted)
    if take_slots and Dimension.CONCURRENCY in limited:
        for _ in range(wanted_workers):
            slot: Decision = yield TryHold({Dimension.CONCURRENCY.value: 1})
            if slot.hold is None:
                if not admission.slots:
                    if fan_out_hold is not None:
                        yield Release(fan_out_hold)
                    assert slot.denial is not None
                    raise slot.denial
                break
            admission.slots.append(slot.hold)
        report.workers = len(admission.slots)
    else:
        report.workers = wanted_workers
    return admission
