"""
The two shells that run the admission generator: one over the sync ledger, one over the
async ledger. They are the only code here that touches I/O, and they differ by ``await``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from ..enforcer import Decision, Enforcer, Hold
from ..errors import LedgerUnavailable
from ..scopes import Frame
from ._admission import IO, ReadLines, Release, TryHold

T = TypeVar("T")


def _prepare(enforcer: Enforcer, frame: Frame, req: TryHold) -> tuple[Any, ...]:
    units, lines, on_expiry = enforcer.prepare(req.amounts, frame)
    return units, lines, req.on_expiry or on_expiry, req.ttl_s or enforcer.policy.hold_ttl_s


def try_hold(enforcer: Enforcer, frame: Frame, req: TryHold) -> Decision:
    """``Enforcer.try_hold`` with the request's own expiry rule (a fan-out hold is charged)."""
    units, lines, on_expiry, ttl = _prepare(enforcer, frame, req)
    if not lines:
        return Decision(Hold(enforcer, "unbudgeted", [], units, None))
    try:
        rid, outcome = enforcer.ledger.try_reserve(lines, ttl_s=ttl, on_expiry=on_expiry)
    except LedgerUnavailable as exc:
        return enforcer.unavailable(exc, units, False)
    return enforcer.granted(rid, outcome, lines, units, False)


async def atry_hold(enforcer: Enforcer, frame: Frame, req: TryHold) -> Decision:
    units, lines, on_expiry, ttl = _prepare(enforcer, frame, req)
    if not lines:
        return Decision(Hold(enforcer, "unbudgeted", [], units, None))
    try:
        rid, outcome = await enforcer.aledger.try_reserve(lines, ttl_s=ttl, on_expiry=on_expiry)
    except LedgerUnavailable as exc:
        return enforcer.unavailable(exc, units, False)
    return enforcer.granted(rid, outcome, lines, units, False)


def drive(gen: Generator[IO, Any, T], frame: Frame) -> T:
    """Run ``gen`` to its result over the sync ledger."""
    enforcer = frame.enforcer
    answer: Any = None
    while True:
        try:
            request = gen.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result
        if isinstance(request, ReadLines):
            answer = [s for s in enforcer.ledger.read_lines(request.keys) if s is not None]
        elif isinstance(request, TryHold):
            answer = try_hold(enforcer, frame, request)
        elif isinstance(request, Release):
            request.hold.release()
            answer = None


async def adrive(gen: Generator[IO, Any, T], frame: Frame) -> T:
    """Run ``gen`` to its result over the async ledger."""
    enforcer = frame.enforcer
    answer: Any = None
    while True:
        try:
            request = gen.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result
        if isinstance(request, ReadLines):
            lines = await enforcer.aledger.read_lines(request.keys)
            answer = [s for s in lines if s is not None]
        elif isinstance(request, TryHold):
            answer = await atry_hold(enforcer, frame, request)
        elif isinstance(request, Release):
            await request.hold.arelease()
            answer = None
