"""
The two drivers of :func:`~._procedure.call_procedure`: plain calls, and ``await``.

Each is a loop that sends results into the procedure (or throws exceptions into it) and
executes the operation it yields. They are the only place where a call's I/O happens, and
they are deliberately the same dozen lines twice; everything else is shared.

The async driver protects the ledger writes from cancellation: a cancelled task must not
abandon a reservation that its worker thread (SQLite) or server (Redis, PostgreSQL) goes on
to grant. Writes run as shielded tasks; if the caller is cancelled while a reservation is
being made, the reservation is released as soon as it lands.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ExecBudgetError
from ._procedure import (
    Call,
    ChargeRetry,
    Commit,
    Op,
    Parse,
    ReadRoom,
    Release,
    Send,
    Sleep,
    TryHold,
    call_procedure,
)

if TYPE_CHECKING:
    from ..enforcer import Decision, Enforcer

log = logging.getLogger("execbudget.invocation")
T = TypeVar("T")
_RETRY: dict[str, int] = {"retries": 1}
#: Settlement tasks started where nobody awaits them (finalizers, cancelled admissions).
BACKGROUND: set[asyncio.Task[Any]] = set()


# -- sync ------------------------------------------------------------------------------------
def drive(call: Call, send: Callable[[dict[str, Any]], Any]) -> Any:
    """Run one call with blocking I/O."""
    gen = call_procedure(call)
    enforcer, frame = call.enforcer, call.frame
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op: Op = gen.send(value) if error is None else gen.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            kind = type(op)
            if kind is TryHold:
                assert isinstance(op, TryHold)
                value = enforcer.try_hold(op.amounts, frame=frame, ttl_s=op.ttl_s)
            elif kind is Send:
                assert isinstance(op, Send)
                value = send(op.kwargs)
            elif kind is Commit:
                assert isinstance(op, Commit)
                op.hold.commit(op.actual)
            elif kind is ReadRoom:
                value = enforcer.remaining(frame)
            elif kind is Release:
                assert isinstance(op, Release)
                op.hold.release()
            elif kind is ChargeRetry:
                enforcer.charge(_RETRY, frame=frame)
            elif kind is Parse:
                assert isinstance(op, Parse)
                value = op.response.parse()
            elif kind is Sleep:
                assert isinstance(op, Sleep)
                time.sleep(op.seconds)
        except BaseException as exc:
            error = exc


# -- async -----------------------------------------------------------------------------------
async def adrive(call: Call, send: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
    """Run one call with asyncio I/O (the twin of :func:`drive`)."""
    gen = call_procedure(call)
    enforcer, frame = call.enforcer, call.frame
    suspends = ledger_suspends(enforcer)
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op: Op = gen.send(value) if error is None else gen.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            kind = type(op)
            if kind is TryHold:
                assert isinstance(op, TryHold)
                hold = enforcer.atry_hold(op.amounts, frame=frame, ttl_s=op.ttl_s)
                value = await (_reserve_shielded(hold) if suspends else hold)
            elif kind is Send:
                assert isinstance(op, Send)
                value = await send(op.kwargs)
            elif kind is Commit:
                assert isinstance(op, Commit)
                commit = op.hold.acommit(op.actual)
                await (shielded(commit) if suspends else commit)
            elif kind is ReadRoom:
                value = await enforcer.aremaining(frame)
            elif kind is Release:
                assert isinstance(op, Release)
                release = op.hold.arelease()
                await (shielded(release) if suspends else release)
            elif kind is ChargeRetry:
                await enforcer.acharge(_RETRY, frame=frame)
            elif kind is Parse:
                assert isinstance(op, Parse)
                value = op.response.parse()
                if inspect.isawaitable(value):
                    value = await value
            elif kind is Sleep:
                assert isinstance(op, Sleep)
                await asyncio.sleep(op.seconds)
        except BaseException as exc:
            error = exc


def ledger_suspends(enforcer: Enforcer) -> bool:
    """False for ``memory://``: its async calls never suspend, so cannot be interrupted."""
    try:
        storage = enforcer.aledger.storage
    except ExecBudgetError:
        return True
    return getattr(storage, "scheme", None) != "memory"


def background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task nobody awaits, keeping it alive until it finishes."""
    task = asyncio.ensure_future(coro)
    BACKGROUND.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("execbudget: background settlement failed: %s", task.exception())


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` to completion even if the awaiting task is cancelled meanwhile."""
    try:
        waiting = coro.send(None)
    except StopIteration as done:  # finished without suspending: nothing could cancel it
        value: T = done.value
        return value
    task = background(_resume(coro, waiting))
    return await asyncio.shield(task)


async def _reserve_shielded(coro: Coroutine[Any, Any, Decision]) -> Decision:
    try:
        waiting = coro.send(None)
    except StopIteration as done:  # granted or refused inline (SQLite, not busy)
        decision: Decision = done.value
        return decision
    task = background(_resume(coro, waiting))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_release_granted)
        raise


async def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    """
    Drive ``coro`` on from its first suspension, as a task would have: ``waiting`` is what
    it yielded (a future it awaits, or None for a bare yield). A ledger operation that
    completes inline never gets here, and so costs no task, no shield and no loop turns.
    """
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))  # done either way; the coroutine reads it
        except BaseException as exc:  # this task was cancelled: pass it on, as a task would
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                thrown: T = done.value
                return thrown
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            value: T = done.value
            return value


def _release_granted(task: asyncio.Task[Decision]) -> None:
    """A reservation landed after its caller was cancelled: give it back."""
    if task.cancelled() or task.exception() is not None:
        return
    hold = task.result().hold
    if hold is not None and not hold.settled:
        background(hold.arelease())
