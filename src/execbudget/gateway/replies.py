"""
Every non-2xx answer of the gateway, in the shape the client's SDK parses.

OpenAI routes answer ``{"error": {"message", "type", "param", "code", ...}}``; the Anthropic
route answers ``{"type": "error", "error": {"type", "message", ...}}``. Either way
``error.type`` says what happened and ``error.message`` what to change.

A budget denial is **402** with ``x-should-retry: false`` (both SDKs obey it) and, when the
refusing line is a calendar window, ``Retry-After`` in seconds until it resets. It is never
a 429: a 429 tells every SDK and retry helper to try again, which turns an exhausted
budget into a retry storm. The body carries scope, dimension, limit, spent, held,
requested, window and ``resets_at``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from starlette.responses import Response

from ..errors import BudgetExceeded, LedgerUnavailable

__all__ = [
    "Dialect",
    "denial_body",
    "denial_response",
    "error_response",
    "json_response",
    "unavailable_response",
]

Dialect = Literal["openai", "anthropic"]

_NO_RETRY = {"x-should-retry": "false"}


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(data), status, headers=dict(headers or {}), media_type="application/json")


def error_body(
    dialect: Dialect,
    kind: str,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if dialect == "openai":
        error["param"] = param
        error["code"] = code or kind
    elif code is not None:
        error["code"] = code
    if extra:
        error.update({k: v for k, v in extra.items() if k not in ("type", "message")})
    if dialect == "anthropic":
        return {"type": "error", "error": error}
    return {"error": error}


def error_response(
    dialect: Dialect,
    status: int,
    kind: str,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry: bool | None = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A 4xx/5xx in the dialect's shape. ``retry=False`` sends ``x-should-retry: false``."""
    out = dict(headers or {})
    if retry is not None:
        out["x-should-retry"] = "true" if retry else "false"
    body = error_body(dialect, kind, message, code=code, param=param)
    return json_response(body, status, out)


def denial_body(dialect: Dialect, denial: BudgetExceeded) -> dict[str, Any]:
    data = denial.to_dict()
    return error_body(dialect, "budget_exceeded", str(denial), code="budget_exceeded", extra=data)


def retry_after_s(resets_at: datetime | None, now_ms: int) -> int | None:
    """Whole seconds until the window resets (at least 1), or None for lifetime limits."""
    if resets_at is None:
        return None
    return max(1, math.ceil(resets_at.timestamp() - now_ms / 1000))


def denial_response(
    dialect: Dialect, denial: BudgetExceeded, now_ms: int, headers: Mapping[str, str] | None = None
) -> Response:
    out = {**_NO_RETRY, **(headers or {})}
    wait = retry_after_s(denial.resets_at, now_ms)
    if wait is not None:
        out["retry-after"] = str(wait)
    out["x-execbudget-denied-scope"] = denial.scope
    out["x-execbudget-denied-dimension"] = denial.dimension
    return json_response(denial_body(dialect, denial), 402, out)


def unavailable_response(dialect: Dialect, exc: LedgerUnavailable) -> Response:
    """Fail closed: the ledger could not be reached, so nothing was held and nothing sent."""
    message = (
        f"the budget ledger is unavailable, so this request was not sent (fail closed): "
        f"{exc.detail}. Nothing was spent. Retry later; operators: check the ledger "
        "(failure_mode: open in the policy admits requests unbudgeted instead)."
    )
    return error_response(
        dialect,
        503,
        "ledger_unavailable",
        message,
        retry=None,  # a transient outage: let the SDK's retry policy decide
        headers={"retry-after": "1"},
    )
