"""
The enforcer: turns an action into a hold on the current scope chain.

An action is a vector of amounts (a model call: cost, tokens and one call; a step; a
retry; a tool call; a branch). ``hold`` plans it onto every line of the chain, checks the
chain's deadlines, and reserves all lines in one atomic ledger operation; only a granted
hold lets the action start. ``charge`` does the same for actions that are spent the moment
they start (a step, a retry), in one operation. ``try_*`` variants return a ``Decision``
instead of raising. Sync and async share every step but the ledger call itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clock import SYSTEM_CLOCK, Clock
from .errors import BudgetExceeded, ConfigurationError, DeadlineExceeded, LedgerUnavailable
from .ledger import (
    DEFAULT_URL,
    AsyncLedger,
    Ledger,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    denial_error,
    new_rid,
)
from .ledger._ledger import check_reserve
from .policy import CallCaps, Policy, ScopeLimits
from .scopes import (
    CURRENT,
    Frame,
    Planned,
    call_caps,
    iter_chain,
    plan_for,
    plan_lines,
)
from .units import Dimension, LedgerUnits, check_units, dimension, money_to_units, parse_money

if TYPE_CHECKING:
    from .run import Scope

log = logging.getLogger("execbudget")

Amounts = Mapping[str, Any]


def as_policy(policy: Policy | str | Path | Mapping[str, Any] | None) -> Policy:
    if policy is None:
        return Policy.empty()
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str | Path):
        return Policy.load(policy)
    if isinstance(policy, Mapping):
        return Policy.from_dict(policy)
    raise ConfigurationError(f"policy must be a Policy, a file path or a mapping, got {policy!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a ``try_*`` call: a granted hold, or the denial that would be raised."""

    hold: Hold | None
    denial: BudgetExceeded | None = None

    @property
    def granted(self) -> bool:
        return self.hold is not None

    def __bool__(self) -> bool:
        return self.granted


class Hold:
    """
    A granted hold. Settle it once: ``commit(actual)`` charges what was used and frees the
    rest; ``release()`` frees all of it. As a context manager it commits the held amounts
    (or ``hold.actual`` if set) on success and releases on an exception.
    """

    __slots__ = (
        "_settled",
        "actual",
        "amounts",
        "degraded",
        "enforcer",
        "expires_at_ms",
        "lines",
        "rid",
    )

    def __init__(
        self,
        enforcer: Enforcer,
        rid: str,
        lines: list[LineRequest],
        amounts: dict[str, int],
        expires_at_ms: int | None,
        *,
        degraded: bool = False,
        settled: bool = False,
    ) -> None:
        self.enforcer = enforcer
        self.rid = rid
        self.lines = lines
        self.amounts = amounts
        self.expires_at_ms = expires_at_ms
        self.degraded = degraded  # granted without a ledger (fail-open)
        self.actual: Amounts | None = None
        self._settled = settled or not lines

    @property
    def settled(self) -> bool:
        return self._settled

    def commit(self, actual: Amounts | None = None) -> None:
        if self._settled:
            return
        self._settled = True
        units = self.enforcer.to_units(actual) if actual is not None else None
        self.enforcer.ledger.commit(self.rid, units)

    def release(self) -> None:
        if self._settled:
            return
        self._settled = True
        self.enforcer.ledger.release(self.rid)

    async def acommit(self, actual: Amounts | None = None) -> None:
        if self._settled:
            return
        self._settled = True
        units = self.enforcer.to_units(actual) if actual is not None else None
        await self.enforcer.aledger.commit(self.rid, units)

    async def arelease(self) -> None:
        if self._settled:
            return
        self._settled = True
        await self.enforcer.aledger.release(self.rid)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit(self.actual)
        else:
            self.release()

    async def __aenter__(self) -> Hold:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.acommit(self.actual)
        else:
            await self.arelease()

    def __repr__(self) -> str:
        state = "settled" if self._settled else "held"
        return f"<Hold {self.rid} {state} {self.amounts}>"


class Enforcer:
    """
    A policy, a ledger and a clock: everything needed to hold actions on scope chains.

    ``execbudget.configure(...)`` builds the process default; build several ``Enforcer``
    objects when one program serves several policies or ledgers.
    """

    def __init__(
        self,
        policy: Policy | str | Path | Mapping[str, Any] | None = None,
        ledger: Ledger | AsyncLedger | str | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.policy = as_policy(policy)
        self.clock = clock or SYSTEM_CLOCK
        self._ledger: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._aledger: AsyncLedger | None = ledger if isinstance(ledger, AsyncLedger) else None
        # Opening a ledger on first use is guarded: threads racing to it would each open
        # their own (on memory://, separate books: a budget each).
        self._opening = threading.Lock()
        if ledger is not None and not isinstance(ledger, Ledger | AsyncLedger | str):
            raise ConfigurationError(f"ledger must be a Ledger, AsyncLedger or URL, got {ledger!r}")
        self.ledger_url = ledger if isinstance(ledger, str) else None
        for led in (self._ledger, self._aledger):
            if led is not None:
                led.currency = self.policy.currency

    # -- ledgers -------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        """The sync ledger (opened on first use)."""
        ledger = self._ledger
        if ledger is None:
            with self._opening:
                ledger = self._ledger
                if ledger is None:
                    if self._aledger is not None:
                        raise ConfigurationError(
                            "this Enforcer was given an AsyncLedger; use the async API "
                            "(ahold, acharge, async with) or give it a ledger URL"
                        )
                    url = self.ledger_url or DEFAULT_URL
                    ledger = Ledger.from_url(url, clock=self.clock)
                    ledger.currency = self.policy.currency
                    self._ledger = ledger
        return ledger

    @property
    def aledger(self) -> AsyncLedger:
        """The async ledger: the same store as ``ledger`` where the backend is in-process."""
        aledger = self._aledger
        if aledger is None:
            url = self.ledger_url or DEFAULT_URL
            shared = self._ledger is not None or url.startswith(("memory:", "sqlite:"))
            sync = self.ledger if shared else None  # opened first: it takes the lock too
            with self._opening:
                aledger = self._aledger
                if aledger is None:
                    if sync is not None:
                        aledger = AsyncLedger(sync.storage, url=sync.url)
                    else:
                        aledger = AsyncLedger.from_url(url, clock=self._server_clock())
                    aledger.currency = self.policy.currency
                    self._aledger = aledger
        return aledger

    def _server_clock(self) -> Clock | None:
        return None if self.clock is SYSTEM_CLOCK else self.clock

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # -- scopes --------------------------------------------------------------------------
    def scope(
        self,
        kind: str,
        name: str,
        *,
        instance: str | bool = False,
        limits: Mapping[str, Any] | None = None,
    ) -> Scope:
        """A named scope (``org``, ``team``, ``key``, ...) whose lines all of its work shares."""
        from .run import Scope

        return Scope(self, kind, name, instance=instance, limits=limits, is_run=False)

    def run(
        self,
        name: str,
        *,
        kind: str = "run",
        limits: Mapping[str, Any] | None = None,
        instance: str | bool = True,
    ) -> Scope:
        """One run of a workflow or agent, with its own lines; nested runs are sub-agents."""
        from .run import Scope

        return Scope(self, kind, name, instance=instance, limits=limits, is_run=True)

    def limits_for(self, scope: str, inline: Mapping[str, Any] | None = None) -> ScopeLimits:
        limits = self.policy.limits_for(scope)
        if inline:
            limits = limits.merge(self.policy.inline_limits(inline, what=f"limits of {scope}"))
        return limits

    # -- the pure steps shared by sync and async ----------------------------------------
    def to_units(self, amounts: Amounts) -> dict[str, int]:
        """Amounts as ledger integers: money (Decimal or '0.05 USD') for cost, else counts."""
        if type(amounts) is LedgerUnits:  # converted already (a wrapped call's settlement)
            return amounts
        units: dict[str, int] = {}
        for name, value in amounts.items():
            # the hot path (steps, retries, tool calls: small ints) skips the enum lookup
            if name in _COUNT_DIMS and type(value) is int and 0 <= value <= _MAX_UNITS:
                units[name] = value
                continue
            # and a model call's cost, a Decimal: parse_money would print and re-read it
            if name == "cost" and type(value) is Decimal and value.is_finite() and value >= 0:
                units[name] = money_to_units(value)
                continue
            dim = dimension(name)
            if dim is Dimension.COST:
                money = parse_money(value, currency=self.policy.currency, what="cost")
                units[dim.value] = money_to_units(money)
            elif dim in (Dimension.DEPTH, Dimension.TIME):
                raise ConfigurationError(f"{name} is checked on the scope chain; it is not held")
            else:
                units[dim.value] = check_units(value, what=name)
        return units

    def check_deadline(self, frame: Frame | None) -> None:
        """Raise DeadlineExceeded if any scope of the chain is past its deadline."""
        if frame is None or frame.deadline is None:
            return
        now = self.clock.monotonic()
        if now < frame.deadline:
            return
        for f in frame.chain():
            limit_ms = f.limits.time_ms
            if limit_ms is not None and now >= f.started + limit_ms / 1000:
                raise DeadlineExceeded(
                    scope=f.key,
                    dimension="time",
                    limit=f"{limit_ms / 1000:g}s",
                    spent=f"{now - f.started:.3f}s",
                    held="0s",
                    requested="more time",
                    reason="deadline",
                )
        raise DeadlineExceeded(  # pragma: no cover - the loop always finds the owner
            scope=frame.key,
            dimension="time",
            limit="?",
            spent="?",
            held="0s",
            requested="more time",
            reason="deadline",
        )

    def prepare(
        self, amounts: Amounts, frame: Frame | None
    ) -> tuple[dict[str, int], list[LineRequest], OnExpiry]:
        units, planned, on_expiry = self._planned(amounts, frame)
        return units, [] if planned is None else planned.lines, on_expiry

    def _planned(
        self, amounts: Amounts, frame: Frame | None
    ) -> tuple[dict[str, int], Planned | None, OnExpiry]:
        """``prepare`` with the shared ``Planned`` entry (None outside any scope)."""
        units = self.to_units(amounts)
        if frame is None:
            return units, None, self.policy.spec.on_expiry
        if frame.deadline is not None:  # check_deadline's own first test, saved a call
            self.check_deadline(frame)
        planned = plan_for(frame, units, self.clock.now_ms(), self.policy.timezone)
        on_expiry = frame.on_expiry
        if on_expiry is None:
            on_expiry = self._on_expiry(frame)
        return units, planned, on_expiry

    def _on_expiry(self, frame: Frame) -> OnExpiry:
        """The expiry rule of a hold on the chain (charge if any scope says so), cached."""
        charge = any(f.limits.on_expiry is OnExpiry.CHARGE for f in iter_chain(frame))
        on_expiry = frame.on_expiry = OnExpiry.CHARGE if charge else self.policy.spec.on_expiry
        return on_expiry

    def granted(
        self,
        rid: str,
        outcome: ReserveOutcome,
        lines: list[LineRequest],
        units: dict[str, int],
        charge_now: bool,
    ) -> Decision:
        if outcome.denial is not None:
            return Decision(None, denial_error(outcome.denial, lines, self.policy.currency))
        return Decision(Hold(self, rid, lines, units, outcome.expires_at_ms, settled=charge_now))

    def unavailable(
        self, exc: LedgerUnavailable, units: dict[str, int], charge_now: bool
    ) -> Decision:
        if not self.policy.fail_open:
            raise exc
        log.warning("execbudget: ledger unavailable, failing open by policy: %s", exc.detail)
        return Decision(Hold(self, "fail-open", [], units, None, degraded=True))

    def _checked(self, planned: Planned, rid: str | None, ttl_s: float | None) -> tuple[str, int]:
        """
        The hold's id and TTL in ms, its lines validated by the ledger's ``check_reserve``.
        With a fresh id, a repeated plan is validated once per TTL (``Planned.checked``, as
        ``charge`` does); a caller's own id is checked every time.
        """
        ttl = ttl_s or self.policy.hold_ttl_s
        if rid:  # (an empty id means a fresh one, as the ledger's try_reserve takes it)
            return rid, check_reserve(rid, planned.lines, ttl)
        rid = new_rid()
        checked = planned.checked
        if checked is None or checked[0] != ttl:
            checked = planned.checked = (ttl, check_reserve(rid, planned.lines, ttl))
        return rid, checked[1]

    @staticmethod
    def _frame(frame: Frame | None) -> Frame | None:
        return frame if frame is not None else CURRENT.get()

    # -- sync ----------------------------------------------------------------------------
    def try_hold(
        self,
        amounts: Amounts,
        *,
        frame: Frame | None = None,
        rid: str | None = None,
        ttl_s: float | None = None,
        charge_now: bool = False,
    ) -> Decision:
        frame = self._frame(frame)
        units, planned, on_expiry = self._planned(amounts, frame)
        if planned is None or not planned.lines:  # nothing limits this action: no ledger trip
            return Decision(Hold(self, rid or "unbudgeted", [], units, None))
        lines = planned.lines
        rid, ttl_ms = self._checked(planned, rid, ttl_s)
        try:
            ledger = self.ledger
            outcome = ledger.reserve_checked(rid, lines, ttl_ms, on_expiry, charge_now)
            # Expired holds of crashed workers block until reaped: reap, then retry once.
            if outcome.denial is not None and ledger.reap():
                outcome = ledger.reserve_checked(rid, lines, ttl_ms, on_expiry, charge_now)
        except LedgerUnavailable as exc:
            return self.unavailable(exc, units, charge_now)
        return self.granted(rid, outcome, lines, units, charge_now)

    def hold(self, amounts: Amounts, **kwargs: Any) -> Hold:
        """Hold ``amounts`` on the chain, or raise the denial."""
        decision = self.try_hold(amounts, **kwargs)
        if decision.hold is None:
            assert decision.denial is not None
            raise decision.denial
        return decision.hold

    def charge(self, amounts: Amounts, *, frame: Frame | None = None) -> None:
        """Spend ``amounts`` now (a step, a retry, a tool call), or raise the denial."""
        # The hot path of the agent loop: the same steps as try_hold, without building a
        # Decision and a settled Hold nobody reads, and with the ledger's validation of the
        # planned lines done once per repeated plan (``Planned.checked``), not per call.
        if frame is None:
            frame = CURRENT.get()
        units, planned, on_expiry = self._planned(amounts, frame)
        if planned is None or not planned.lines:
            return
        lines = planned.lines
        policy = self.policy
        rid = new_rid()
        ttl_s = policy.hold_ttl_s
        checked = planned.checked
        if checked is None or checked[0] != ttl_s:
            checked = planned.checked = (ttl_s, check_reserve(rid, lines, ttl_s))
        try:
            outcome = self.ledger.reserve_checked(rid, lines, checked[1], on_expiry, True)
        except LedgerUnavailable as exc:
            self.unavailable(exc, units, True)
            return
        if outcome.denial is not None:
            raise denial_error(outcome.denial, lines, policy.currency)

    # -- async ---------------------------------------------------------------------------
    async def atry_hold(
        self,
        amounts: Amounts,
        *,
        frame: Frame | None = None,
        rid: str | None = None,
        ttl_s: float | None = None,
        charge_now: bool = False,
    ) -> Decision:
        frame = self._frame(frame)
        units, planned, on_expiry = self._planned(amounts, frame)
        if planned is None or not planned.lines:
            return Decision(Hold(self, rid or "unbudgeted", [], units, None))
        lines = planned.lines
        rid, ttl_ms = self._checked(planned, rid, ttl_s)
        try:
            ledger = self.aledger
            outcome = await ledger.reserve_checked(rid, lines, ttl_ms, on_expiry, charge_now)
            # Expired holds of crashed workers block until reaped: reap, then retry once.
            if outcome.denial is not None and await ledger.reap():
                outcome = await ledger.reserve_checked(rid, lines, ttl_ms, on_expiry, charge_now)
        except LedgerUnavailable as exc:
            return self.unavailable(exc, units, charge_now)
        return self.granted(rid, outcome, lines, units, charge_now)

    async def ahold(self, amounts: Amounts, **kwargs: Any) -> Hold:
        decision = await self.atry_hold(amounts, **kwargs)
        if decision.hold is None:
            assert decision.denial is not None
            raise decision.denial
        return decision.hold

    async def acharge(self, amounts: Amounts, *, frame: Frame | None = None) -> None:
        await self.ahold(amounts, frame=frame, charge_now=True)

    # -- reading -------------------------------------------------------------------------
    def call_caps(self, frame: Frame | None = None) -> CallCaps:
        return call_caps(self._frame(frame))

    def status(self, scope_prefix: str = "") -> list[LineState]:
        return self.ledger.lines(scope_prefix)

    def remaining(self, frame: Frame | None = None) -> dict[str, int]:
        """
        Per dimension, the least room left on any line of the chain (ledger units).

        A read, not a hold: use it to size an action (clamp ``max_tokens``), then hold; a
        concurrent caller may take the room in between, and the hold then says so.
        """
        wanted = self._room_lines(frame)
        return _least_room(wanted, self.ledger.read_lines(list(wanted)))

    async def aremaining(self, frame: Frame | None = None) -> dict[str, int]:
        wanted = self._room_lines(frame)
        return _least_room(wanted, await self.aledger.read_lines(list(wanted)))

    def _room_lines(self, frame: Frame | None) -> dict[LineKey, int]:
        lines = plan_lines(
            self._frame(frame),
            dict.fromkeys(_ALL_LEDGER_DIMS, 0),
            self.clock.now_ms(),
            self.policy.timezone,
        )
        return {line.key: line.limit for line in lines}


def _least_room(wanted: Mapping[LineKey, int], found: Sequence[LineState | None]) -> dict[str, int]:
    room: dict[str, int] = {}
    for (key, limit), seen in zip(wanted.items(), found, strict=True):
        left = limit if seen is None else seen.remaining
        room[key.dimension] = min(left, room.get(key.dimension, left))
    return room


_ALL_LEDGER_DIMS = [d.value for d in Dimension if d not in (Dimension.DEPTH, Dimension.TIME)]
#: dimensions counted in plain integers (everything held but money)
_COUNT_DIMS = frozenset(_ALL_LEDGER_DIMS) - {Dimension.COST.value}
_MAX_UNITS = 2**62
