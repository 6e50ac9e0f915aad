"""
The step iterator: ``for step in run.steps():`` charges one step before each iteration.

A step is one iteration of an agent loop (docs/loop.md). It is charged *before* the body of
the iteration runs, so the loop that would exceed its budget never starts that iteration:
the budget is a number of iterations that will run, never "checked after the fact". The
charge also checks the chain's deadlines, which is the between-steps check that bounds a
synchronous loop in time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Final

from ..errors import BudgetExceeded

if TYPE_CHECKING:
    from ..run import Scope

_ONE_STEP: Final = {"steps": 1}


class Steps:
    """
    An iterator over the steps of a loop: yields 1, 2, 3, ... after charging each one.

    When the step budget is spent it raises ``StepBudgetExceeded`` (the default), or, with
    ``quiet=True``, ends the loop and keeps the denial in ``denial``, so code after the loop
    can wind down. Winding down is not free: a final-answer model call after the loop is a
    call like any other and is held on the same budget (there is no hidden extra call).
    Other denials (a deadline, a killed scope) always raise.

    Iterate it with ``for`` in sync code and ``async for`` in async code (the async face
    charges through the async ledger).
    """

    __slots__ = ("_quiet", "_scope", "count", "denial")

    def __init__(self, scope: Scope, *, quiet: bool = False) -> None:
        self._scope = scope
        self._quiet = quiet
        #: steps charged so far by this iterator
        self.count = 0
        #: the denial that ended a quiet loop, else None
        self.denial: BudgetExceeded | None = None

    def _ended(self, exc: BudgetExceeded) -> bool:
        """Whether ``exc`` ends a quiet loop rather than propagating."""
        if self._quiet and exc.dimension == "steps":
            self.denial = exc
            return True
        return False

    def __iter__(self) -> Iterator[int]:
        frame = self._scope.frame
        charge = self._scope.enforcer.charge
        while True:
            try:
                charge(_ONE_STEP, frame=frame)
            except BudgetExceeded as exc:
                if self._ended(exc):
                    return
                raise
            self.count += 1
            yield self.count

    async def _aiter(self) -> AsyncIterator[int]:
        frame = self._scope.frame
        charge = self._scope.enforcer.acharge
        while True:
            try:
                await charge(_ONE_STEP, frame=frame)
            except BudgetExceeded as exc:
                if self._ended(exc):
                    return
                raise
            self.count += 1
            yield self.count

    def __aiter__(self) -> AsyncIterator[int]:
        return self._aiter()

    def __repr__(self) -> str:
        return f"<Steps of {self._scope.key}: {self.count} charged>"
