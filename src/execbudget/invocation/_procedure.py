"""
One guarded model call, written once for sync and async: a generator of I/O operations.

The whole decision logic of a call (count, plan, hold, re-plan after a lost race,
downgrade, send, settle, classify a failure, charge a retry, back off) lives in
:func:`call_procedure`. It performs no I/O itself: it *yields* small operation objects
(``ReadRoom``, ``TryHold``, ``Send``, ``Commit``, ``Release``, ``ChargeRetry``, ``Sleep``)
and receives their results (or has their exceptions thrown back in). Two thin drivers in
:mod:`._drive` execute the operations, one with plain calls and one with ``await``; this
is psycopg's generator technique, and it is why there is no second copy of this file to
drift from the first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import BudgetExceeded, DeadlineExceeded, ExecBudgetError, UnpricedModelError
from ..policy import CallCaps
from ..pricing import ModelPrice, PriceBook, TokenCounter
from ..pricing.catalog import find_model
from ..scopes import limited_dimensions
from ..units import Dimension
from ._apis import Api, OutputTally, given
from ._failures import Failure, backoff_s, classify
from ._plan import (
    ROOM_DIMENSIONS,
    CallRequest,
    Plan,
    plan_call,
    request_timeout,
    should_downgrade,
)
from ._settle import local_usage, usage_units

if TYPE_CHECKING:
    from ..enforcer import Decision, Enforcer, Hold
    from ..scopes import Frame

log = logging.getLogger("execbudget.invocation")

Mode = Literal["deny", "clamp", "downgrade"]
#: Seconds a hold outlives the request timeout, so the reaper never frees a live call.
TTL_MARGIN_S: Final = 30.0
#: Used for the hold TTL when neither the caller nor the client gives a timeout.
DEFAULT_TIMEOUT_S: Final = 600.0


# -- operations --------------------------------------------------------------------------
class ReadRoom:
    """Read ``Enforcer.remaining()`` for the call's chain → ``dict[str, int]``."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TryHold:
    """``Enforcer.try_hold(amounts)`` on the call's chain → ``Decision``."""

    amounts: Mapping[str, Any]
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Send:
    """Call the SDK method with ``kwargs`` → its response (or its exception)."""

    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Commit:
    """Settle ``hold`` with ``actual`` (``None``: charge it in full)."""

    hold: Hold
    actual: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Release:
    hold: Hold


@dataclass(frozen=True, slots=True)
class Parse:
    """``response.parse()`` of a raw response (awaited if the SDK's parse is async)."""

    response: Any


class ChargeRetry:
    """Charge one retry on the call's chain (``RetryBudgetExceeded`` when spent)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Op = ReadRoom | TryHold | Send | Parse | Commit | Release | ChargeRetry | Sleep
READ_ROOM: Final = ReadRoom()
#: What an answered but unbilled attempt (429, 5xx) costs: one call, nothing else.
UNBILLED_CALL: Final = {"cost": 0, "tokens": 0, "input_tokens": 0, "output_tokens": 0, "calls": 1}
CHARGE_RETRY: Final = ChargeRetry()


# -- settings ----------------------------------------------------------------------------
_PROVIDER_HINTS: dict[tuple[str, str], str | None] = {}


@dataclass(slots=True)
class Settings:
    """What ``execbudget.wrap`` was told; shared by every call of one wrapped client."""

    enforcer: Enforcer | None = None
    retries: int = 2
    counter: TokenCounter = field(default_factory=lambda: TokenCounter(memo=True))
    degradation: Mode | None = None
    downgrade_model: str | None = None
    default_max_tokens: int | None = None
    admission_rounds: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    client_timeout_s: float | None = None
    _prices: dict[tuple[int, str], tuple[int, PriceBook, ModelPrice]] = field(
        default_factory=dict, repr=False
    )
    #: The caps of the last chain a call was made on: ``(frame, enforcer, caps)``. Frames
    #: and their limits do not change, and consecutive calls mostly share a chain.
    _caps: tuple[Frame | None, Enforcer, CallCaps] | None = field(default=None, repr=False)

    def mode(self, enforcer: Enforcer) -> tuple[Mode, str | None]:
        spec = enforcer.policy.spec.degradation
        mode: Mode = self.degradation or spec.mode
        return mode, self.downgrade_model or spec.model

    def caps(self, enforcer: Enforcer, frame: Frame | None) -> CallCaps:
        """``enforcer.call_caps(frame)``, remembered for the last chain."""
        last = self._caps
        if last is not None and last[0] is frame and last[1] is enforcer:
            return last[2]
        caps = enforcer.call_caps(frame)
        self._caps = (frame, enforcer, caps)
        return caps

    def price(self, book: PriceBook, model: str, provider: str) -> ModelPrice:
        """
        The model's rate card. The SDK's provider is used as a hint only when the bare
        name has no bundled price and the provider-qualified one does (OpenAI embedding
        models are only found that way); otherwise the book decides, fallbacks included.
        Rate cards are kept for the rest of the UTC day (prices change by date).
        """
        day = int(time.time() // 86_400)
        cached = self._prices.get((id(book), model))
        if cached is not None and cached[0] == day and cached[1] is book:
            return cached[2]
        price = self._resolve_price(book, model, provider)
        if len(self._prices) < 1024:
            self._prices[(id(book), model)] = (day, book, price)
        return price

    def _resolve_price(self, book: PriceBook, model: str, provider: str) -> ModelPrice:
        key = (provider, model)
        hint = _PROVIDER_HINTS.get(key, "?")
        if hint == "?":
            hint = None
            if find_model(model, None) is None and find_model(model, provider) is not None:
                hint = provider
            if len(_PROVIDER_HINTS) < 4096:
                _PROVIDER_HINTS[key] = hint
        return book.price(model, hint)


@dataclass(slots=True)
class Call:
    """One call in flight: what was asked, and where it is budgeted."""

    api: Api
    kwargs: Mapping[str, Any]
    stream: bool
    enforcer: Enforcer
    frame: Frame | None
    settings: Settings
    #: Sent through ``with_raw_response``: the response is parsed to settle it.
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Admitted:
    """A granted admission: the plan sent and the hold that covers it."""

    plan: Plan
    price: ModelPrice
    hold: Hold
    request: CallRequest
    timeout_s: float | None
    deadline_bound: bool
    #: The hold's time to live; a long stream extends it as it runs.
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Started:
    """A stream was opened: the wrapper meters it with ``admitted`` until it settles."""

    stream: Any
    admitted: Admitted
    #: The raw response it was parsed from (``with_raw_response`` calls), else None.
    raw_response: Any = None


# -- the procedure -----------------------------------------------------------------------
def call_procedure(call: Call) -> Generator[Op, Any, Any]:
    """Run one guarded call; returns the response, or ``Started`` for a stream."""
    api, settings = call.api, call.settings
    kwargs = api.normalize(call.kwargs)
    model = api.model(kwargs)
    caller_timeout = _seconds(kwargs.get("timeout"))
    attempt = 0
    while True:
        admitted = yield from _admit(call, kwargs, model, caller_timeout)
        send = api.apply(kwargs, admitted.plan, stream=call.stream, attempt=attempt)
        if admitted.timeout_s is not None and admitted.timeout_s != caller_timeout:
            send["timeout"] = admitted.timeout_s  # the deadline or the per-call cap
        try:
            response = yield Send(send)
        except GeneratorExit:
            raise
        except BaseException as exc:
            failure = classify(exc, api)
            yield from _settle_failure(admitted, failure)
            if failure.timeout and admitted.deadline_bound:
                raise _deadline_error(call) from exc
            if not failure.retryable or attempt >= settings.retries:
                raise
            attempt += 1
            try:
                yield CHARGE_RETRY
            except BudgetExceeded as denial:
                raise denial from exc
            delay = backoff_s(
                attempt,
                failure.retry_after_s,
                base_s=settings.backoff_base_s,
                max_s=settings.backoff_max_s,
            )
            left = _deadline_left(call)
            if left is not None:
                delay = min(delay, max(0.0, left))
            if delay > 0:
                yield Sleep(delay)
            continue
        parsed = (yield Parse(response)) if call.raw else response
        if call.stream:
            return Started(parsed, admitted, response if call.raw else None)
        yield from _settle_response(call, admitted, parsed)
        return response


def _admit(
    call: Call, kwargs: Mapping[str, Any], model: str, caller_timeout: float | None
) -> Generator[Op, Any, Admitted]:
    """Plan and hold, re-planning after a lost race and downgrading if the policy says."""
    api, settings, enforcer, frame = call.api, call.settings, call.enforcer, call.frame
    mode, cheaper = settings.mode(enforcer)
    models = [model]
    if mode == "downgrade" and cheaper and cheaper != model:
        models.append(cheaper)
    caps = settings.caps(enforcer, frame)
    book = enforcer.policy.price_book()
    scope = frame.key if frame is not None else "call"
    denial: BudgetExceeded | None = None
    for index, name in enumerate(models):
        request = api.describe(kwargs, name, settings.counter)
        price = _price_or_deny(settings, book, name, api, frame, caps)
        sized = request.has_output and (
            mode == "clamp" or index > 0 or request.requested_output is None
        )
        # A clamp only ever lowers a fixed output (the caller's max_tokens, or
        # default_max_tokens), so in clamp mode hold that first and read the room only if
        # the ledger refuses it for lack of money or tokens: one ledger read fewer per call
        # while the budget has room, and the same plan as reading first (the room bounds
        # would not have bound it). The unclamped try does not use up a round.
        unclamped_first = (
            sized
            and index == 0
            and (request.requested_output is not None or settings.default_max_tokens is not None)
        )
        rounds = max(1, settings.admission_rounds) + (1 if unclamped_first else 0)
        previous: int | None = None
        for round_ in range(rounds):
            read = sized and not (unclamped_first and round_ == 0)
            room = (yield READ_ROOM) if read else None
            planned = plan_call(
                request,
                price=price,
                caps=caps,
                room=room,
                sized=read,
                default_output=settings.default_max_tokens,
                scope=scope,
                currency=enforcer.policy.currency,
            )
            if isinstance(planned, BudgetExceeded):
                denial = planned
                break
            if previous is not None and planned.allowance >= previous:
                break  # the room did not shrink: the last denial is not about our size
            timeout, by_deadline = request_timeout(
                caller_timeout, caps.timeout_s, _deadline_left(call)
            )
            ttl = max(
                enforcer.policy.hold_ttl_s,
                (timeout or settings.client_timeout_s or DEFAULT_TIMEOUT_S) + TTL_MARGIN_S,
            )
            decision: Decision = yield TryHold(planned.amounts, ttl)
            if decision.hold is not None:
                return Admitted(planned, price, decision.hold, request, timeout, by_deadline, ttl)
            denial = decision.denial
            if read and planned.kind != "sized":
                break
            if not read and not (sized and denial is not None and _clamp_may_help(denial)):
                break
            previous = planned.allowance
        if denial is None or not should_downgrade(denial):
            break
    assert denial is not None
    raise denial


def _clamp_may_help(denial: BudgetExceeded) -> bool:
    """A smaller output fits where money or tokens ran short (not calls, not a block)."""
    return denial.reason == "limit" and denial.dimension in ROOM_DIMENSIONS


def _price_or_deny(
    settings: Settings,
    book: PriceBook,
    model: str,
    api: Api,
    frame: Frame | None,
    caps: CallCaps,
) -> ModelPrice:
    """
    The model's price; an unpriced model is denied (fail closed) whenever money is
    budgeted on the chain or capped per call. Where nothing budgets money, its price
    cannot matter and the call is held on its other dimensions at a zero rate.
    """
    try:
        return settings.price(book, model, api.provider)
    except UnpricedModelError:
        if caps.max_cost is not None or Dimension.COST in limited_dimensions(frame):
            raise
        return ModelPrice(
            model=model,
            provider=api.provider,
            currency=book.currency,
            input_per_mtok=Decimal(0),
            output_per_mtok=Decimal(0),
            source="unpriced: no money budget on the chain",
        )


def _settle_failure(admitted: Admitted, failure: Failure) -> Generator[Op, Any, None]:
    """Release, bill the reported usage, or charge the whole hold (unknown outcome)."""
    try:
        if failure.settle == "release":
            yield Release(admitted.hold)
        elif failure.settle == "call":
            yield Commit(admitted.hold, UNBILLED_CALL)
        elif failure.settle == "usage" and failure.usage is not None:
            yield Commit(admitted.hold, usage_units(admitted.price, failure.usage))
        else:
            yield Commit(admitted.hold, None)
    except ExecBudgetError as exc:  # the call's own error matters more; the TTL frees it
        log.error("execbudget: could not settle hold %s: %s", admitted.hold.rid, exc)


def _settle_response(call: Call, admitted: Admitted, response: Any) -> Generator[Op, Any, None]:
    usage = call.api.usage(response)
    if usage is None:  # the provider reported nothing: count what arrived
        tally = OutputTally.start(call.settings.counter, admitted.plan.model)
        call.api.count_response(response, tally)
        usage = local_usage(admitted.plan, tally)
    try:
        yield Commit(admitted.hold, usage_units(admitted.price, usage))
    except ExecBudgetError as exc:
        # The answer is paid for and delivered; failing the call now would only make the
        # caller pay again. The hold stays until its TTL, and the log says so.
        log.error("execbudget: could not settle hold %s: %s", admitted.hold.rid, exc)


def _deadline_left(call: Call) -> float | None:
    frame = call.frame
    if frame is None or frame.deadline is None:
        return None
    return frame.deadline - call.enforcer.clock.monotonic()


def _deadline_error(call: Call) -> DeadlineExceeded:
    try:
        call.enforcer.check_deadline(call.frame)
    except DeadlineExceeded as err:
        return err
    scope = call.frame.key if call.frame is not None else "call"
    return DeadlineExceeded(
        scope=scope,
        dimension="time",
        limit="deadline",
        spent="deadline reached",
        held="0s",
        requested="more time",
        reason="deadline",
    )


def _seconds(timeout: Any) -> float | None:
    """A caller's timeout as seconds: a number, or the read timeout of a Timeout object."""
    if not given(timeout):
        return None
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return float(read) if isinstance(read, int | float) else None
