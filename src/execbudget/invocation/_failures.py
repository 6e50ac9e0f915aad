"""
What a failed provider call means for its hold and for a retry (pure).

The SDKs raise a handful of error classes; three questions decide what happens next:

* **was anything billed?** A status error (429, 5xx, 4xx) carries a response the provider
  did not bill, but it was a model invocation, so it counts as a call (DESIGN §1: every
  retry is a call); an error that carries usage (``LengthFinishReasonError``) is billed that
  usage; a connection that failed while connecting sent nothing. Anything else after the
  request may have left (a read timeout, a dropped connection, a cancelled task) has an
  **unknown** outcome: the provider may have generated the whole allowance, so the whole
  hold is charged. Charging less would let a crash loop spend without being counted.
* **may it be retried?** What the SDKs retry (408, 409, 429, 5xx, timeouts, connection
  errors), with their ``x-should-retry`` and ``retry-after`` rules; never a denial.
* **how long to wait?** ``retry-after-ms`` / ``retry-after`` if the server says (more than
  60 s means "do not retry"), else exponential backoff with jitter.

Classes are recognised by name, so the same code reads openai's and anthropic's trees
and both httpx generations without importing them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ExecBudgetError
from ..pricing import Usage
from ._apis import Api

#: Transport errors raised before a byte of the request left: nothing can be billed.
_NOT_SENT: Final = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})
#: Longest server-requested wait we honour; longer means "do not retry" (as the SDKs do).
MAX_RETRY_AFTER_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Failure:
    """How to settle a failed attempt and whether to try again."""

    #: "release" (never sent), "call" (answered, not billed: charge one call), "usage" (bill
    #: ``usage``) or "hold" (unknown outcome: charge the whole hold).
    settle: str
    retryable: bool = False
    timeout: bool = False
    retry_after_s: float | None = None
    usage: Usage | None = None
    status: int | None = None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _causes(exc: BaseException, depth: int = 6) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and depth > 0:
        found.append(current)
        current = current.__cause__ or current.__context__
        depth -= 1
    return found


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return float(raw) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to our own backoff
    return None


def _billed_usage(exc: BaseException, api: Api) -> Usage | None:
    completion = getattr(exc, "completion", None)
    if completion is not None:
        try:
            return api.usage(completion)
        except (ExecBudgetError, TypeError, ValueError):
            return None
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping) and body.get("usage") is not None:
        try:
            return api.usage(body)
        except (ExecBudgetError, TypeError, ValueError):
            return None
    return None


def classify(exc: BaseException, api: Api) -> Failure:
    """Decide what a failed attempt costs and whether it may be retried."""
    if isinstance(exc, ExecBudgetError):
        return Failure("release")  # our own denial or fault: nothing was sent
    if not isinstance(exc, Exception):
        return Failure("hold")  # cancelled, interrupted: the request may be running
    usage = _billed_usage(exc, api)
    if usage is not None:
        return Failure("usage", usage=usage)
    names = _names(exc)
    status = getattr(exc, "status_code", None)
    if "APIStatusError" in names and isinstance(status, int):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        after = _retry_after(headers)
        should = headers.get("x-should-retry") if headers is not None else None
        if should == "true":
            retryable = True
        elif should == "false":
            retryable = False
        else:
            retryable = status in (408, 409, 429) or status >= 500
        if after is not None and after > MAX_RETRY_AFTER_S:
            retryable = False
        return Failure("call", retryable=retryable, retry_after_s=after, status=status)
    if "APIConnectionError" in names:  # APITimeoutError is one too
        timeout = "APITimeoutError" in names
        never_sent = any(_names(c) & _NOT_SENT for c in _causes(exc))
        return Failure("release" if never_sent else "hold", retryable=True, timeout=timeout)
    if "APIError" in names:  # a response arrived but could not be read: it was billed
        return Failure("hold")
    return Failure("release")  # argument errors raised by the SDK before sending


def backoff_s(
    attempt: int,
    retry_after_s: float | None,
    *,
    base_s: float,
    max_s: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before re-attempt ``attempt`` (1 for the first retry)."""
    if retry_after_s is not None and 0 <= retry_after_s <= MAX_RETRY_AFTER_S:
        return retry_after_s
    delay = min(base_s * 2 ** (attempt - 1), max_s)
    jitter = (rng or random).random()
    return float(delay * (1 - 0.25 * jitter))
