"""
The process default: ``configure`` once, then ``execbudget.run(...)`` anywhere.

Inside an open scope, the scope's own enforcer is used, so a library called from a run
charges the run that called it, whichever enforcer opened it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .clock import Clock
from .enforcer import Enforcer, Hold
from .ledger import AsyncLedger, Ledger
from .policy import Policy
from .run import Scope
from .scopes import CURRENT

_default: Enforcer | None = None
_default_lock = threading.Lock()


def configure(
    policy: Policy | str | Path | Mapping[str, Any] | None = None,
    ledger: Ledger | AsyncLedger | str | None = None,
    *,
    clock: Clock | None = None,
) -> Enforcer:
    """
    Set the process-default enforcer: a policy (object, file path or mapping) and a ledger
    (object or URL; the embedded SQLite file ``.execbudget/ledger.db`` by default).
    """
    global _default
    enforcer = Enforcer(policy, ledger, clock=clock)
    with _default_lock:
        previous, _default = _default, enforcer
    if previous is not None:
        previous.close()
    return enforcer


def get_enforcer() -> Enforcer:
    """The enforcer of the current scope, else the process default (made on first use)."""
    frame = CURRENT.get()
    if frame is not None:
        return frame.enforcer
    global _default
    with _default_lock:
        if _default is None:
            _default = Enforcer()
        return _default


def run(
    name: str,
    *,
    kind: str = "run",
    limits: Mapping[str, Any] | None = None,
    instance: str | bool = True,
) -> Scope:
    """
    Open a budgeted run (``with`` or ``async with``): limits from the policy for
    ``run:<name>`` tightened by ``limits``; nested runs are child scopes.
    """
    return get_enforcer().run(name, kind=kind, limits=limits, instance=instance)


def scope(
    kind: str, name: str, *, limits: Mapping[str, Any] | None = None, instance: str | bool = False
) -> Scope:
    """Open a platform scope (``org``, ``team``, ``key``, ``workflow``...) around work."""
    return get_enforcer().scope(kind, name, limits=limits, instance=instance)


def current() -> Scope | None:
    """The innermost open scope's frame wrapped for reading, or None outside any scope."""
    frame = CURRENT.get()
    if frame is None:
        return None
    view = Scope(
        frame.enforcer, frame.kind, frame.name, instance=False, limits=None, is_run=frame.is_run
    )
    view.instance = frame.key.partition("#")[2] or None
    view._frame = frame
    return view


def hold(amounts: Mapping[str, Any], **kwargs: Any) -> Hold:
    """Hold ``amounts`` on the current chain (see ``Enforcer.hold``)."""
    return get_enforcer().hold(amounts, **kwargs)
