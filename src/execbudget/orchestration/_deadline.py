"""
Deadlines for orchestration: the time left on a chain, and the error that says it ran out.

Async work is cancelled at the deadline (``asyncio.timeout``); sync work cannot be
interrupted from outside a thread, so a sync fan-out stops *waiting* at the deadline (its
caller gets ``DeadlineExceeded`` on time) and its branches stop at their next check, while
each model call inside them carries an HTTP timeout no longer than the time left (the
invocation layer sets it), which is what bounds a hung call.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import DeadlineExceeded
from ..scopes import Frame

R = TypeVar("R")


def remaining_s(frame: Frame | None) -> float | None:
    """Seconds until the chain's nearest deadline (may be <= 0); None when there is none."""
    if frame is None or frame.deadline is None:
        return None
    return frame.deadline - frame.enforcer.clock.monotonic()


def deadline_error(frame: Frame) -> DeadlineExceeded:
    """
    The ``DeadlineExceeded`` for ``frame``'s chain, naming the scope whose time ran out,
    the elapsed time and the limit, even when a timer fired a hair before the clock agrees.
    """
    enforcer = frame.enforcer
    try:
        enforcer.check_deadline(frame)
    except DeadlineExceeded as err:
        return err
    now = enforcer.clock.monotonic()
    owner = frame
    for f in frame.chain():
        ends = None if f.limits.time_ms is None else f.started + f.limits.time_ms / 1000
        if ends is not None and frame.deadline is not None and abs(ends - frame.deadline) < 1e-6:
            owner = f
            break
    limit_ms = owner.limits.time_ms
    return DeadlineExceeded(
        scope=owner.key,
        dimension="time",
        limit=f"{limit_ms / 1000:g}s" if limit_ms is not None else "deadline",
        spent=f"{now - owner.started:.3f}s",
        held="0s",
        requested="more time",
        reason="deadline",
    )


def call_with_deadline(frame: Frame | None, fn: Callable[[], R]) -> R:
    """
    Run ``fn`` in a daemon thread and wait for it until the chain's deadline at most.

    The caller gets ``DeadlineExceeded`` on time even if ``fn`` hangs; the thread is left to
    finish on its own (a thread cannot be killed), so ``fn`` should itself be bounded (model
    calls through the wrappers are: their HTTP timeout is the time left).
    """
    left = remaining_s(frame)
    if left is None:
        return fn()
    assert frame is not None
    if left <= 0:
        raise deadline_error(frame)
    box: list[R] = []
    error: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)
        finally:
            done.set()

    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(target,), daemon=True, name="execbudget-bounded").start()
    if not done.wait(left):
        raise deadline_error(frame)
    if error:
        raise error[0]
    return box[0]
