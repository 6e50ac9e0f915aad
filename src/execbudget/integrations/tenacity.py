"""
tenacity, budgeted: every re-attempt is a ``retries`` charge, and a denial is never retried.

Three pieces, usable alone or together (``retrying()`` / ``aretrying()`` wire all three):

* ``stop_on_budget()`` — a stop condition: stop when the chain has no ``retries`` left, or
  no room in any dimension a re-attempt would need (``calls``, ``cost``, tokens,
  ``tool_calls``), or when the next sleep would end past the deadline; combine with
  tenacity's own (``stop_after_attempt(5) | stop_on_budget()``).
* ``retry_unless_denied(inner)`` — a retry predicate: ``inner`` (default: any exception),
  but never for a ``BudgetExceeded``. A denial is a decision, not a fault: retrying it
  would only be denied again, or worse, succeed after someone else's hold is released.
* ``charge_retries`` / ``acharge_retries`` — a ``before`` hook: before every attempt after
  the first, charge one ``retries`` on the chain, atomically. This is the enforcement; the
  stop condition only avoids a pointless sleep. If the charge is denied, the denial
  propagates out of tenacity as is (tenacity does not catch errors raised by hooks).

The chain is the scope current when each hook runs (or the ``scope=`` given), so a retried
model call inside ``with execbudget.run(...)`` charges that run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

try:
    import tenacity
    from tenacity import RetryCallState
    from tenacity.retry import retry_base
    from tenacity.stop import stop_base
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from . import missing

    raise missing("tenacity") from exc

from ..errors import BudgetExceeded
from ..ledger import LineRequest, LineState
from ..scopes import CURRENT, Frame, limited_dimensions, plan_lines_cached
from ..units import Dimension

if TYPE_CHECKING:
    from ..run import Scope

__all__ = [
    "acharge_retries",
    "aretrying",
    "astop_on_budget",
    "charge_retries",
    "retry_unless_denied",
    "retrying",
    "stop_on_budget",
]

_ONE_RETRY: Final = {"retries": 1}
#: the dimensions a re-attempt of a model or tool call needs room in
RETRY_NEEDS: Final = (
    Dimension.RETRIES,
    Dimension.CALLS,
    Dimension.COST,
    Dimension.TOKENS,
    Dimension.INPUT_TOKENS,
    Dimension.OUTPUT_TOKENS,
    Dimension.TOOL_CALLS,
)


def _frame(scope: Scope | None) -> Frame | None:
    return scope.frame if scope is not None else CURRENT.get()


def _denied(retry_state: RetryCallState) -> bool:
    outcome = retry_state.outcome
    return (
        outcome is not None and outcome.failed and isinstance(outcome.exception(), BudgetExceeded)
    )


class stop_on_budget(stop_base):
    """
    Stop retrying when a re-attempt could not be afforded, or its sleep ends past the deadline.

    ``needs`` are the dimensions checked (default ``RETRY_NEEDS``); a dimension no scope of
    the chain limits is not read. The check is a read of the ledger, made only when
    tenacity is about to retry; the atomic charge in ``charge_retries`` is what enforces.
    """

    def __init__(self, scope: Scope | None = None, *, needs: Iterable[str] = RETRY_NEEDS) -> None:
        self.scope = scope
        self.needs = tuple(Dimension(n) for n in needs)

    def _watched(self, frame: Frame) -> list[Dimension]:
        limited = limited_dimensions(frame)
        return [d for d in self.needs if d in limited]

    def _out_of_time(self, frame: Frame, retry_state: RetryCallState) -> bool:
        if frame.deadline is None:
            return False
        left = frame.deadline - frame.enforcer.clock.monotonic()
        return left <= retry_state.upcoming_sleep

    @staticmethod
    def _lines(frame: Frame, watched: list[Dimension]) -> list[LineRequest]:
        enforcer = frame.enforcer
        return plan_lines_cached(
            frame, dict.fromkeys(watched, 0), enforcer.clock.now_ms(), enforcer.policy.timezone
        )

    @staticmethod
    def _exhausted(lines: list[LineRequest], states: Sequence[LineState | None]) -> bool:
        """Whether any watched line has no room left (a line never used has all of it)."""
        for line, state in zip(lines, states, strict=True):
            if state is not None and (state.blocked or state.remaining <= 0):
                return True
            if state is None and line.limit <= 0:
                return True
        return False

    def __call__(self, retry_state: RetryCallState) -> bool:
        if _denied(retry_state):
            return True
        frame = _frame(self.scope)
        if frame is None:
            return False
        if self._out_of_time(frame, retry_state):
            return True
        watched = self._watched(frame)
        if not watched:
            return False
        lines = self._lines(frame, watched)
        states = frame.enforcer.ledger.read_lines([line.key for line in lines])
        return self._exhausted(lines, states)


class astop_on_budget(stop_on_budget):
    """``stop_on_budget`` reading the async ledger (for ``AsyncRetrying``)."""

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        if _denied(retry_state):
            return True
        frame = _frame(self.scope)
        if frame is None:
            return False
        if self._out_of_time(frame, retry_state):
            return True
        watched = self._watched(frame)
        if not watched:
            return False
        lines = self._lines(frame, watched)
        states = await frame.enforcer.aledger.read_lines([line.key for line in lines])
        return self._exhausted(lines, states)


class retry_unless_denied(retry_base):
    """Retry when ``inner`` says so, but never after a ``BudgetExceeded``."""

    def __init__(self, inner: retry_base | Callable[[RetryCallState], bool] | None = None) -> None:
        self.inner = inner if inner is not None else tenacity.retry_if_exception_type()

    def __call__(self, retry_state: RetryCallState) -> bool:
        if _denied(retry_state):
            return False
        return bool(self.inner(retry_state))


class charge_retries:
    """
    A tenacity ``before`` hook: charge one ``retries`` before each attempt after the first.

    Raises the denial (``RetryBudgetExceeded``, or ``DeadlineExceeded`` past the deadline),
    which tenacity lets through unretried.
    """

    def __init__(self, scope: Scope | None = None) -> None:
        self.scope = scope

    def __call__(self, retry_state: RetryCallState) -> None:
        if retry_state.attempt_number <= 1:
            return
        frame = _frame(self.scope)
        if frame is not None:
            frame.enforcer.charge(_ONE_RETRY, frame=frame)


class acharge_retries(charge_retries):
    """``charge_retries`` over the async ledger (for ``AsyncRetrying``)."""

    async def __call__(self, retry_state: RetryCallState) -> None:  # type: ignore[override]
        if retry_state.attempt_number <= 1:
            return
        frame = _frame(self.scope)
        if frame is not None:
            await frame.enforcer.acharge(_ONE_RETRY, frame=frame)


class _astop_any(stop_base):
    """``a | b`` for stop conditions when one of them is async (tenacity's is sync only)."""

    def __init__(self, *stops: Any) -> None:
        self.stops = stops

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        for stop in self.stops:
            verdict = stop(retry_state)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                return True
        return False


def retrying(
    *,
    scope: Scope | None = None,
    stop: stop_base | None = None,
    retry: retry_base | None = None,
    **kwargs: Any,
) -> tenacity.Retrying:
    """
    A ``tenacity.Retrying`` with the budget wired in: ``stop | stop_on_budget()``,
    ``retry_unless_denied(retry)`` and ``before=charge_retries()``. Other keyword
    arguments (``wait``, ``reraise``, ...) go to tenacity unchanged.

        for attempt in retrying(wait=wait_exponential(max=2), reraise=True):
            with attempt:
                client.chat.completions.create(...)
    """
    return tenacity.Retrying(
        stop=stop_on_budget(scope) if stop is None else stop | stop_on_budget(scope),
        retry=retry_unless_denied(retry),
        before=charge_retries(scope),
        **kwargs,
    )


def aretrying(
    *,
    scope: Scope | None = None,
    stop: stop_base | None = None,
    retry: retry_base | None = None,
    **kwargs: Any,
) -> tenacity.AsyncRetrying:
    """The ``tenacity.AsyncRetrying`` twin of ``retrying``, over the async ledger."""
    return tenacity.AsyncRetrying(
        stop=astop_on_budget(scope) if stop is None else _astop_any(stop, astop_on_budget(scope)),
        retry=retry_unless_denied(retry),
        before=acharge_retries(scope),
        **kwargs,
    )
