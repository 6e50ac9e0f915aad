"""
``run.branch()``: start one branch by hand, for orchestration ``map`` does not fit.

    with run.branch("search") as branch:       # in any thread: it needs no context
        branch.step(); call_model(...)

Entering it holds one ``concurrency`` (released when the branch ends) and charges one
``fan_out`` (a branch started), in that order, so a branch refused for concurrency spends
no fan-out; then it opens a child scope ``branch:<name>#<n>`` of the run, so everything the
branch holds lands on the run's chain. Under ``async with`` the branch body is cancelled
at the chain's deadline, like a run's.
"""

from __future__ import annotations

import itertools
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final

from ..run import Scope
from ..scopes import CURRENT, Frame

if TYPE_CHECKING:
    from ..enforcer import Hold

_ONE_SLOT: Final = {"concurrency": 1}
_ONE_BRANCH: Final = {"fan_out": 1}
_SEQ = itertools.count(1)


class Branch:
    """A hand-started branch of a run; use as ``with`` or ``async with``."""

    def __init__(self, parent: Frame, name: str | None = None) -> None:
        self._parent = parent
        self.name = name or parent.name
        self._slot: Hold | None = None
        self._scope: Scope | None = None
        self._token: Token[Frame | None] | None = None

    def _child(self) -> Scope:
        parent = self._parent
        return Scope(
            parent.enforcer,
            "branch",
            self.name,
            instance=str(next(_SEQ)),
            limits=None,
            is_run=False,
        )

    # -- sync --------------------------------------------------------------------------
    def __enter__(self) -> Scope:
        parent = self._parent
        enforcer = parent.enforcer
        enforcer.check_deadline(parent)
        slot = enforcer.hold(_ONE_SLOT, frame=parent)
        try:
            enforcer.charge(_ONE_BRANCH, frame=parent)
            self._token = CURRENT.set(parent)
            scope = self._child()
            scope.__enter__()
        except BaseException:
            self._reset()
            slot.release()
            raise
        self._slot, self._scope = slot, scope
        return scope

    def __exit__(self, *exc: object) -> None:
        try:
            if self._scope is not None:
                self._scope.__exit__(*exc)
        finally:
            self._reset()
            slot, self._slot, self._scope = self._slot, None, None
            if slot is not None:
                slot.release()

    # -- async -------------------------------------------------------------------------
    async def __aenter__(self) -> Scope:
        parent = self._parent
        enforcer = parent.enforcer
        enforcer.check_deadline(parent)
        slot = await enforcer.ahold(_ONE_SLOT, frame=parent)
        try:
            await enforcer.acharge(_ONE_BRANCH, frame=parent)
            self._token = CURRENT.set(parent)
            scope = self._child()
            await scope.__aenter__()
        except BaseException:
            self._reset()
            await slot.arelease()
            raise
        self._slot, self._scope = slot, scope
        return scope

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            if self._scope is not None:
                await self._scope.__aexit__(exc_type, exc, tb)
        finally:
            self._reset()
            slot, self._slot, self._scope = self._slot, None, None
            if slot is not None:
                await slot.arelease()

    def _reset(self) -> None:
        if self._token is not None:
            CURRENT.reset(self._token)
            self._token = None

    def __repr__(self) -> str:
        state = "running" if self._scope is not None else "not started"
        return f"<Branch {self.name} of {self._parent.key} {state}>"
