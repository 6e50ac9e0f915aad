"""
Admission and settlement of one gateway request: the invocation layer's call procedure,
driven with the gateway's I/O.

A request body is exactly the keyword arguments an SDK sends, so the gateway runs the
invocation layer's pure pieces unchanged: ``call_procedure`` (count the input offline,
per-call caps, size or clamp ``max_tokens``, plan the worst case, re-plan after a lost
race, downgrade, settle from usage or a local count, classify a failure), the per-API
adapters and the stream meter. Only the operations it yields are executed differently:

* ``TryHold`` also holds the **gateway line** of every scope of the chain (the kill
  switch, see ``chain``), in the same atomic reserve;
* ``ReadRoom`` reads the room of the chain's lines with one exact ``read_lines``
  (``read_rooms``): one exact read of the named lines on every backend, where listing a scope's
  lines is a key scan on Redis (500 ms at 20 000 keys, measured);
* ``Send`` is the upstream HTTP exchange; the procedure never retries it (``retries=0``):
  the client's SDK sees the upstream error and decides, so there is one retry layer, not
  two multiplying each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..enforcer import Decision, Enforcer, Hold
from ..errors import BudgetExceeded, LedgerUnavailable, ScopeKilled
from ..invocation.engine import (
    Call,
    ChargeRetry,
    Commit,
    ReadRoom,
    Release,
    Send,
    Settings,
    Sleep,
    TryHold,
    background,
    call_procedure,
    shielded,
)
from ..ledger import AsyncLedger, LineKey, LineRequest, LineState, ReserveStatus, new_rid
from ..scopes import Frame, plan_lines
from ..units import LEDGER_DIMENSIONS
from .chain import GATEWAY_WINDOW, SENTINEL_LIMIT, Chain

__all__ = [
    "CallRecord",
    "LineBooks",
    "Settlements",
    "books_from_reserve",
    "drive_call",
    "killed_denial",
    "least_rooms",
    "probe_line",
    "read_lines",
    "read_rooms",
    "settle_hold",
    "settle_later",
    "settlements",
    "try_hold",
]

log = logging.getLogger("execbudget.gateway")

_ALL_DIMS: Final = tuple(sorted(d.value for d in LEDGER_DIMENSIONS))
_RETRY: Final = {"retries": 1}


# -- settlements in flight ---------------------------------------------------------------
class Settlements:
    """
    The ledger writes this process started for one ledger and has not seen land: deferred
    commits, retries of a settlement the ledger refused, releases of orphaned holds. The
    gateway's shutdown waits for them (``Gateway.aclose``); once it has begun
    (``closing``) a retry stops waiting out its schedule.
    """

    __slots__ = ("closing", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task nobody cancels (``background``), tracked until it ends."""
        task = background(coro)
        if not task.done():
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return task

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every tracked write; True if none is left."""
        while self.tasks:
            pending = set(self.tasks)
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            if late:
                return False
        return True


_SETTLEMENTS: weakref.WeakKeyDictionary[AsyncLedger, Settlements] = weakref.WeakKeyDictionary()


def settlements(ledger: AsyncLedger) -> Settlements:
    """The settlements in flight on ``ledger`` (one registry per ledger object)."""
    found = _SETTLEMENTS.get(ledger)
    if found is None:
        found = _SETTLEMENTS[ledger] = Settlements()
    return found


# -- reads -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LineBooks:
    """One line as the ledger sees it now (``blocked`` is ``None``, ``killed``, ...)."""

    line: LineRequest
    limit: int
    spent: int
    held: int
    blocked: str | None

    @property
    def room(self) -> int:
        if self.blocked is not None:
            return 0
        return max(0, self.limit - self.spent - self.held)


def _books(line: LineRequest, state: LineState | None) -> LineBooks:
    if state is None:  # no reserve has created the line yet: all of its limit is room
        return LineBooks(line, line.limit, 0, 0, None)
    return LineBooks(line, state.limit, state.spent, state.held, state.blocked)


async def probe_line(ledger: AsyncLedger, line: LineRequest) -> LineBooks:
    """Read one line's books; nothing is written."""
    (state,) = await ledger.read_lines([line.key])
    return _books(line, state)


async def read_lines(
    enforcer: Enforcer, frame: Frame | None, dims: tuple[str, ...] = _ALL_DIMS
) -> list[LineBooks]:
    """The books of every budget line of the chain in ``dims``, in one exact read."""
    lines = plan_lines(
        frame, dict.fromkeys(dims, 0), enforcer.clock.now_ms(), enforcer.policy.timezone
    )
    if not lines:
        return []
    states = await enforcer.aledger.read_lines([line.key for line in lines])
    return [_books(line, state) for line, state in zip(lines, states, strict=True)]


def books_from_reserve(
    enforcer: Enforcer, frame: Frame | None, states: Sequence[LineState] | None
) -> list[LineBooks] | None:
    """
    What ``read_lines`` would return, from the books a granted reserve returned (Redis
    returns them: the lines it read to check the reserve, as it left them); None when the
    reserve said nothing or did not cover every line ``read_lines`` reads.
    """
    if states is None:
        return None
    lines = plan_lines(
        frame, dict.fromkeys(_ALL_DIMS, 0), enforcer.clock.now_ms(), enforcer.policy.timezone
    )
    by_key = {state.key: state for state in states}
    out: list[LineBooks] = []
    for line in lines:
        state = by_key.get(line.key)
        if state is None:
            return None
        out.append(_books(line, state))
    return out


def least_rooms(books: list[LineBooks]) -> dict[str, tuple[int, str]]:
    """Per dimension, the least room on the chain and the scope that has it."""
    out: dict[str, tuple[int, str]] = {}
    for book in books:
        dim = book.line.key.dimension
        room = book.room
        if dim not in out or room < out[dim][0]:
            out[dim] = (room, book.line.key.scope)
    return out


async def read_rooms(
    enforcer: Enforcer, frame: Frame | None, dims: tuple[str, ...] = _ALL_DIMS
) -> dict[str, tuple[int, str]]:
    """Per dimension, the least room on the chain's lines and the scope that has it."""
    return least_rooms(await read_lines(enforcer, frame, dims))


# -- the hold ----------------------------------------------------------------------------
def killed_denial(scope: str) -> ScopeKilled:
    """The denial of a request (or stream) stopped by a scope's kill switch."""
    return ScopeKilled(
        scope=scope,
        dimension="kill_switch",
        limit="killed",
        spent="-",
        held="-",
        requested="1 call",
        reason="killed",
        hint=f"an operator stopped {scope} with its kill switch; ask them to lift it "
        "(POST /admin/v1/revive)",
    )


async def try_hold(
    enforcer: Enforcer, chain: Chain, amounts: Mapping[str, Any], ttl_s: float
) -> tuple[Decision, Sequence[LineState] | None]:
    """
    Hold ``amounts`` on the chain's budget lines and its gateway lines, all or nothing.
    Also returns the lines' books as the reserve left them, when the ledger says.

    The reserve is awaited directly (a task and a shield around it cost two event-loop
    passes on every request). A request cancelled while its reserve is in flight undoes
    it instead: see ``_undo_reserve``.
    """
    units, lines, on_expiry = enforcer.prepare(amounts, chain.frame)
    lines = [*lines, *chain.gateway_lines()]
    ledger = enforcer.aledger
    rid = new_rid()
    try:
        rid, outcome = await ledger.try_reserve(lines, rid=rid, ttl_s=ttl_s, on_expiry=on_expiry)
    except LedgerUnavailable as exc:
        return enforcer.unavailable(exc, units, False), None  # raises unless failure_mode: open
    except asyncio.CancelledError:
        settlements(ledger).start(_undo_reserve(ledger, rid, ttl_s))
        raise
    denial = outcome.denial
    if denial is not None and denial.reason == "killed":
        return Decision(None, killed_denial(denial.key.scope)), None
    return enforcer.granted(rid, outcome, lines, units, False), outcome.books


#: The line a cancelled request's undo reserves on: one nothing blocks or limits (a kill
#: switch blocks the chain's own gateway lines, and could refuse the undo).
UNDO_LINE: Final = LineRequest(LineKey("gateway:undo", GATEWAY_WINDOW, "calls"), SENTINEL_LIMIT, 0)


async def _undo_reserve(ledger: AsyncLedger, rid: str, ttl_s: float) -> None:
    """
    Make sure the reserve ``rid`` of a cancelled request holds nothing, whenever it lands.

    Its command may have landed, may still be on its way (on another connection than
    this undo's), or may never land. So the undo first reserves ``rid`` itself, for
    nothing on ``UNDO_LINE``: if the original got there first this finds it held
    (``DUP``); if not, the rid now exists and the original, arriving later, is a retry
    of a known rid that changes nothing. Releasing ``rid`` then frees whatever it holds.
    Every backend looks the rid up before it checks a line, so this holds on each. An
    unreachable ledger is retried on the settlements' schedule (shutdown shortens it).
    """
    async for _ in _attempts(ledger, (0.0, *SETTLE_RETRIES_S)):
        try:
            _, outcome = await ledger.try_reserve([UNDO_LINE], rid=rid, ttl_s=ttl_s)
            if outcome.status in (ReserveStatus.OK, ReserveStatus.DUP):
                await ledger.release(rid)
            return
        except LedgerUnavailable:
            continue
    log.error("could not undo the reserve %s of a cancelled request; its TTL frees it", rid)


# -- the driver --------------------------------------------------------------------------
@dataclass(slots=True)
class CallRecord:
    """What happened to one call's budget, for headers, metrics and the access log."""

    hold: Hold | None = None
    held: dict[str, int] = field(default_factory=dict)
    charged: dict[str, int] | None = None
    overrun: bool = False
    rounds: int = 0
    room_reads: int = 0
    #: The chain's lines as the granted reserve left them, when the ledger returns them.
    books: Sequence[LineState] | None = None
    #: Commit without waiting for it (``drive_call`` starts it as a task, ``settling``):
    #: the answer can go out while the ledger writes. Whoever set this awaits ``settling``.
    defer_commit: bool = False
    settling: asyncio.Task[None] | None = None


async def drive_call(
    call: Call,
    chain: Chain,
    send: Callable[[dict[str, Any]], Awaitable[Any]],
    record: CallRecord,
) -> Any:
    """
    Run ``call_procedure`` with the gateway's I/O (the twin of the invocation layer's
    ``adrive``). Returns the upstream answer, or ``Started`` for a stream; raises the
    denial, ``LedgerUnavailable``, an upstream failure, or the request's own error.
    """
    gen = call_procedure(call)
    enforcer = call.enforcer
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                op = gen.send(value) if error is None else gen.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                kind = type(op)
                if kind is TryHold:
                    assert isinstance(op, TryHold)
                    record.rounds += 1
                    value, record.books = await try_hold(enforcer, chain, op.amounts, op.ttl_s)
                    if value.hold is None and await _settled_meanwhile(value, enforcer):
                        record.rounds += 1
                        value, record.books = await try_hold(enforcer, chain, op.amounts, op.ttl_s)
                    if value.hold is not None:
                        record.hold = value.hold
                        record.held = dict(value.hold.amounts)
                elif kind is Send:
                    assert isinstance(op, Send)
                    value = await send(op.kwargs)
                elif kind is Commit:
                    assert isinstance(op, Commit)
                    if record.defer_commit and record.settling is None:
                        record.settling = settle_later(enforcer, op.hold, op.actual, record)
                    else:
                        await settle(enforcer, op.hold, op.actual, record)
                elif kind is ReadRoom:
                    record.room_reads += 1
                    rooms = await read_rooms(
                        enforcer, chain.frame, ("cost", "tokens", "output_tokens")
                    )
                    value = {dim: room for dim, (room, _) in rooms.items()}
                elif kind is Release:
                    assert isinstance(op, Release)
                    await settle_hold(enforcer, op.hold, None, release=True)
                    record.charged = {}
                elif kind is ChargeRetry:  # pragma: no cover - the gateway sets retries=0
                    await enforcer.acharge(_RETRY, frame=chain.frame)
                elif kind is Sleep:  # pragma: no cover - no retries, no backoff
                    assert isinstance(op, Sleep)
                    await asyncio.sleep(op.seconds)
            except BaseException as exc:
                error = exc
    except BaseException:
        hold = record.hold
        # a bug between ops: never leak the hold (a deferred commit is settling it)
        if hold is not None and not hold.settled and record.settling is None:
            settlements(enforcer.aledger).start(hold.arelease())
        raise


#: Seconds a refused hold waits for this process's settlements still writing before it is
#: tried once more (see ``_settled_meanwhile``).
SETTLING_WAIT_S: Final = 1.0


async def _settled_meanwhile(decision: Decision, enforcer: Enforcer) -> bool:
    """
    A hold was refused for its budget while settlements this process started are still
    writing (a whole call's settlement is written after its answer, ``settle_later``): wait
    for them, up to ``SETTLING_WAIT_S``, and say whether the hold is worth one more try.

    So a client that sends its next call the moment it has an answer is admitted against
    the books its previous answer's headers described, not against the previous call's
    whole hold. Only on the denial path: a granted hold never waits.
    """
    denial = decision.denial
    if denial is None or denial.reason != "limit":  # killed, blocked: no settlement helps
        return False
    pending = settlements(enforcer.aledger).tasks
    if not pending:
        return False
    await asyncio.wait(set(pending), timeout=SETTLING_WAIT_S)
    return True


async def settle(
    enforcer: Enforcer, hold: Hold, actual: Mapping[str, Any] | None, record: CallRecord
) -> None:
    """Commit ``actual`` (None: the whole hold), shielded from the request's cancellation."""
    units = enforcer.to_units(actual) if actual is not None else dict(hold.amounts)
    record.charged = units
    record.overrun = any(units.get(dim, 0) > amount for dim, amount in hold.amounts.items())
    await settle_hold(enforcer, hold, actual)


def settle_later(
    enforcer: Enforcer, hold: Hold, actual: Mapping[str, Any] | None, record: CallRecord
) -> asyncio.Task[None]:
    """
    ``settle`` as a task nobody can cancel (``background``): ``record.charged`` and
    ``record.overrun`` are set now, the ledger write runs meanwhile. A settlement the
    ledger refuses is logged, as the procedure itself would (the TTL frees the hold).
    """
    units = enforcer.to_units(actual) if actual is not None else dict(hold.amounts)
    record.charged = units
    record.overrun = any(units.get(dim, 0) > amount for dim, amount in hold.amounts.items())
    return settlements(enforcer.aledger).start(_settle_logged(enforcer, hold, actual))


async def _settle_logged(enforcer: Enforcer, hold: Hold, actual: Mapping[str, Any] | None) -> None:
    try:  # a task nobody cancels already: no shield needed around the write
        await settle_hold(enforcer, hold, actual, shield=False)
    except Exception as exc:
        log.error("execbudget: could not settle hold %s: %s", hold.rid, exc)


#: Seconds between the background retries of a settlement the ledger refused.
SETTLE_RETRIES_S: Final = (0.05, 0.25, 1.0, 4.0, 15.0)
#: Once the gateway is shutting down, a retry waits at most this long between attempts
#: (the schedule above would outlast the shutdown's grace, ``app.SETTLE_GRACE_S``).
SHUTDOWN_RETRY_S: Final = 0.2


async def settle_hold(
    enforcer: Enforcer,
    hold: Hold,
    actual: Mapping[str, Any] | None,
    *,
    release: bool = False,
    shield: bool = True,
) -> bool:
    """
    Commit ``actual`` (or release), never cancelled half way (``shield=False``: the caller
    is a task nobody cancels). If the ledger is briefly unreachable the settlement is
    retried in the background (it is idempotent by the hold's id, so a retry of one that
    did land changes nothing) instead of stranding the hold until its TTL. Returns False
    if it had to be deferred.
    """
    write = hold.arelease() if release else hold.acommit(actual)
    try:
        await (shielded(write) if shield else write)
        return True
    except LedgerUnavailable as exc:
        log.warning("settling hold %s failed, retrying in the background: %s", hold.rid, exc)
        units = None if release or actual is None else enforcer.to_units(actual)
        settlements(enforcer.aledger).start(_retry_settle(enforcer, hold.rid, units, release))
        return False


async def _attempts(ledger: AsyncLedger, delays: Sequence[float]) -> AsyncIterator[None]:
    """
    Yield before each attempt of a background ledger write, after waiting out its delay
    (0: at once). A shutdown cuts the waits short: one attempt at once, the rest
    ``SHUTDOWN_RETRY_S`` apart, so they end within the shutdown's grace.
    """
    closing = settlements(ledger).closing
    tried_at_close = False
    for delay in delays:
        if not closing.is_set():
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), delay)
        elif tried_at_close:
            await asyncio.sleep(min(delay, SHUTDOWN_RETRY_S))
        tried_at_close = closing.is_set()
        yield


async def _retry_settle(
    enforcer: Enforcer, rid: str, units: Mapping[str, int] | None, release: bool
) -> None:
    ledger = enforcer.aledger
    async for _ in _attempts(ledger, SETTLE_RETRIES_S):
        try:
            await (ledger.release(rid) if release else ledger.commit(rid, units))
            return
        except LedgerUnavailable:
            continue
    log.error("could not settle hold %s; the reaper settles it when its TTL ends", rid)


def gateway_settings(
    enforcer: Enforcer, default_max_tokens: int, timeout_s: float, base: Settings | None = None
) -> Settings:
    """The invocation settings of the gateway: no retries (the client's SDK retries)."""
    settings = base or Settings()
    settings.enforcer = enforcer
    settings.retries = 0
    settings.default_max_tokens = default_max_tokens
    settings.client_timeout_s = timeout_s
    return settings


def is_denial(exc: BaseException) -> bool:
    return isinstance(exc, BudgetExceeded)
