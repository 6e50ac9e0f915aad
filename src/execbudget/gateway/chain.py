"""
The scope chain of one gateway request, built server side from the caller's key.

    model:<model>                    platform-wide cap on one model, across every tenant
    org:<org>                        the tenant
    team:<org>/<team>                optional
    key:<key id>
    workflow:<org>/<wf>              X-Execbudget-Workflow (optional)
    run:<org>/<wf>#<run id>          X-Execbudget-Run (optional)

Outermost first: when several scopes refuse, the denial names the highest level, and a
per-call cap denial names the innermost, the caller's key or run. Workflow and run scopes
are namespaced by the key's org: a client may name any run it likes and only ever gets a
run inside its own tenant, so concurrent requests of one run share its budget
atomically, and nobody else's.

Each scope also gets a **gateway line** ``(scope, "gateway", "calls")`` in every hold, with
a limit no one reaches. It counts the calls routed per scope and carries the scope's kill
switch: blocking it refuses the next hold on that scope in every gateway process, in the
same atomic step as the budget check.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from ..enforcer import Enforcer
from ..ledger import LineKey, LineRequest
from ..scopes import Frame
from .keys import KeyRecord

__all__ = [
    "GATEWAY_WINDOW",
    "SENTINEL_LIMIT",
    "Chain",
    "ChainBuilder",
    "RequestError",
    "gateway_line",
]

GATEWAY_WINDOW: Final = "gateway"
SENTINEL_LIMIT: Final = 2**62

_MAX_CACHED: Final = 100_000
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class RequestError(Exception):
    """A request the gateway refuses before any hold: a 4xx with a message saying what to fix."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def gateway_line(scope: str, amount: int = 1) -> LineRequest:
    """The per-scope line that counts gateway calls and carries the kill switch."""
    return LineRequest(LineKey(scope, GATEWAY_WINDOW, "calls"), SENTINEL_LIMIT, amount)


@dataclass(frozen=True, slots=True)
class Chain:
    """The frames of one request, innermost ``frame``, and its scopes outermost first."""

    frame: Frame
    scopes: tuple[str, ...]
    org: str

    def gateway_lines(self) -> tuple[LineRequest, ...]:
        return _gateway_lines(self.scopes)


@functools.lru_cache(maxsize=4096)
def _gateway_lines(scopes: tuple[str, ...]) -> tuple[LineRequest, ...]:
    """The gateway lines of a chain's scopes (the same few chains, request after request)."""
    return tuple(gateway_line(scope) for scope in scopes)


class ChainBuilder:
    """Builds (and caches the fixed part of) the scope chain of a key's requests."""

    def __init__(self, enforcer: Enforcer, *, model_scopes: bool = True) -> None:
        self.enforcer = enforcer
        self.model_scopes = model_scopes
        self._base: dict[tuple[str, str | None], Frame] = {}

    def _frame(self, kind: str, name: str, key: str, parent: Frame | None, is_run: bool) -> Frame:
        enforcer = self.enforcer
        return Frame(
            kind,
            name,
            key,
            enforcer.limits_for(f"{kind}:{name}"),
            parent,
            enforcer,
            enforcer.clock.monotonic(),
            None,  # time budgets span one process's scope; across requests they do not apply
            (parent.depth if parent is not None else 0) + (1 if is_run else 0),
            is_run,
        )

    def base(self, record: KeyRecord, model: str | None) -> Frame:
        """model → org → team → key, cached per key and model (bounded)."""
        cache_key = (record.id, model if self.model_scopes else None)
        frame = self._base.get(cache_key)
        if frame is None:
            parent: Frame | None = None
            if model is not None and self.model_scopes:
                parent = self._frame("model", model, f"model:{model}", None, False)
            parent = self._frame("org", record.org, f"org:{record.org}", parent, False)
            if record.team:
                name = f"{record.org}/{record.team}"
                parent = self._frame("team", name, f"team:{name}", parent, False)
            frame = self._frame("key", record.id, f"key:{record.id}", parent, False)
            if len(self._base) >= _MAX_CACHED:
                self._base.clear()  # many keys × models: start over rather than grow
            self._base[cache_key] = frame
        return frame

    def build(
        self,
        record: KeyRecord,
        model: str | None,
        workflow: str | None = None,
        run: str | None = None,
    ) -> Chain:
        """The chain of one request; raises ``RequestError`` for a malformed header value."""
        frame = self.base(record, model)
        scopes = list(record.scopes)
        if model is not None and self.model_scopes:
            scopes.insert(0, f"model:{model}")
        org = record.org
        if workflow is not None:
            if not _HEADER_NAME.match(workflow):
                raise RequestError(
                    400,
                    f"X-Execbudget-Workflow {workflow!r} must be 1–100 letters, digits, '.', "
                    "'_', ':' or '-'",
                    code="invalid_workflow",
                )
            name = f"{org}/{workflow}"
            frame = self._frame("workflow", name, f"workflow:{name}", frame, False)
            scopes.append(frame.key)
        if run is not None:
            if not _RUN_ID.match(run):
                raise RequestError(
                    400,
                    f"X-Execbudget-Run {run!r} must be 1–128 letters, digits, '.', '_', ':' or '-'",
                    code="invalid_run",
                )
            name = f"{org}/{workflow or 'default'}"
            frame = self._frame("run", name, f"run:{name}#{run}", frame, True)
            scopes.append(frame.key)
        return Chain(frame, tuple(scopes), org)


def model_name_problem(model: object) -> str | None:
    """Why a ``model`` value cannot be used (it names a ledger scope), or None."""
    if not isinstance(model, str):
        return f"'model' must be a string, found {type(model).__name__}"
    if not model.strip():
        return "'model' must not be empty"
    if len(model) > 200 or "#" in model or any(ord(c) < 32 for c in model):
        return "'model' must be at most 200 printable characters without '#'"
    return None
