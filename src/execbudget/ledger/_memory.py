"""
``memory://``: the reference backend, in-process, under one lock.

It is the contract in its plainest form (the SQL and Lua backends do the same steps), used
by tests and single-process programs. ``memory://NAME`` shares one book per name inside a
process, so two ``Ledger.from_url("memory://x")`` see the same lines.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ..clock import SYSTEM_CLOCK, Clock
from ._types import (
    Denial,
    Event,
    HoldRecord,
    HoldState,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    ReserveStatus,
    SettleMode,
    SettleOutcome,
    SettleStatus,
)

_SETTLED_STATE = {
    SettleMode.COMMIT: HoldState.COMMITTED,
    SettleMode.RELEASE: HoldState.RELEASED,
    SettleMode.EXPIRE: HoldState.EXPIRED,
    SettleMode.EXPIRE_CHARGE: HoldState.EXPIRED_CHARGE,
}


@dataclass(slots=True)
class _Line:
    limit: int  # the policy's limit, as passed by the latest reserve
    override: int | None = None  # an operator's limit, which wins until cleared
    spent: int = 0
    held: int = 0
    overrun: int = 0
    blocked: str | None = None


@dataclass(slots=True)
class _Hold:
    amounts: dict[LineKey, int]
    created_ms: int
    expires_at_ms: int
    on_expiry: OnExpiry
    state: HoldState = HoldState.HELD
    charged: dict[LineKey, int] = field(default_factory=dict)
    settled_ms: int | None = None


class _Book:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: dict[LineKey, _Line] = {}
        self.holds: dict[str, _Hold] = {}
        self.events: list[Event] = []


_NAMED_BOOKS: dict[str, _Book] = {}
_NAMED_LOCK = threading.Lock()


def charges_for(
    mode: SettleMode, amounts: Mapping[LineKey, int], actual: Mapping[str, int] | None
) -> dict[LineKey, int]:
    """What settling in ``mode`` charges on each line (shared by every backend's tests)."""
    if mode is SettleMode.COMMIT:
        actual = actual or {}
        return {k: actual.get(k[2], a) for k, a in amounts.items()}
    if mode is SettleMode.EXPIRE_CHARGE:
        return dict(amounts)
    return dict.fromkeys(amounts, 0)


class MemoryStorage:
    """An in-process ledger: exact, fast, gone when the process ends."""

    scheme: ClassVar[str] = "memory"
    base_exceptions: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, name: str = "", *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        if name:
            with _NAMED_LOCK:
                self._book = _NAMED_BOOKS.setdefault(name, _Book())
        else:
            self._book = _Book()

    # -- operations ------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        book = self._book
        now = self.clock.now_ms()
        with book.lock:
            existing = book.holds.get(rid)
            if existing is not None:
                if existing.state is HoldState.HELD:
                    return ReserveOutcome(ReserveStatus.DUP, existing.expires_at_ms)
                return ReserveOutcome(ReserveStatus.SETTLED, existing.expires_at_ms)
            found: list[_Line | None] = [book.lines.get(r.key) for r in lines]
            # Phase 1: check every line; nothing is written before all of them grant.
            for i, (req, line) in enumerate(zip(lines, found, strict=True)):
                if line is None:
                    limit, spent, held, blocked = req.limit, 0, 0, None
                else:
                    limit = req.limit if line.override is None else line.override
                    spent, held, blocked = line.spent, line.held, line.blocked
                if blocked is not None or spent + held + req.amount > limit:
                    denial = Denial(i, req.key, limit, spent, held, req.amount, blocked or "limit")
                    return ReserveOutcome(ReserveStatus.DENIED, denial=denial)
            # Phase 2: apply to every line.
            amounts: dict[LineKey, int] = {}
            for req, line in zip(lines, found, strict=True):
                if line is None:
                    line = book.lines[req.key] = _Line(req.limit)
                else:
                    line.limit = req.limit
                if charge_now:
                    line.spent += req.amount
                else:
                    line.held += req.amount
                amounts[req.key] = amounts.get(req.key, 0) + req.amount
            expires = now + ttl_ms
            hold = _Hold(amounts, now, expires, on_expiry)
            book.holds[rid] = hold
            book.events.append(Event(len(book.events) + 1, now, "reserve", rid, amounts))
            if charge_now:
                hold.state, hold.charged, hold.settled_ms = HoldState.COMMITTED, amounts, now
                book.events.append(Event(len(book.events) + 1, now, "commit", rid, amounts))
            return ReserveOutcome(ReserveStatus.OK, expires)

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        book = self._book
        now = self.clock.now_ms()
        with book.lock:
            hold = book.holds.get(rid)
            if hold is None:
                return SettleOutcome(SettleStatus.UNKNOWN)
            if hold.state is not HoldState.HELD:
                return SettleOutcome(SettleStatus.SETTLED, dict(hold.charged))
            charged = charges_for(mode, hold.amounts, actual)
            overrun = False
            for key, amount in hold.amounts.items():
                line = book.lines[key]
                charge = charged[key]
                line.held -= amount
                line.spent += charge
                if charge > amount:
                    overrun = True
                    line.overrun += charge - amount
                    line.blocked = line.blocked or "overrun"
            hold.state, hold.charged, hold.settled_ms = _SETTLED_STATE[mode], charged, now
            book.events.append(Event(len(book.events) + 1, now, mode.value, rid, charged))
            return SettleOutcome(SettleStatus.OVERRUN if overrun else SettleStatus.OK, charged)

    def extend(self, rid: str, ttl_ms: int) -> bool:
        with self._book.lock:
            hold = self._book.holds.get(rid)
            if hold is None or hold.state is not HoldState.HELD:
                return False
            hold.expires_at_ms = self.clock.now_ms() + ttl_ms
            return True

    def reap(self, limit: int = 200) -> int:
        now = self.clock.now_ms()
        with self._book.lock:
            due = sorted(
                (h.expires_at_ms, rid, h.on_expiry)
                for rid, h in self._book.holds.items()
                if h.state is HoldState.HELD and h.expires_at_ms <= now
            )[:limit]
        done = 0
        for _, rid, on_expiry in due:
            mode = SettleMode.EXPIRE_CHARGE if on_expiry is OnExpiry.CHARGE else SettleMode.EXPIRE
            if self.settle(rid, mode).status in (SettleStatus.OK, SettleStatus.OVERRUN):
                done += 1
        return done

    # -- inspection and administration ----------------------------------------------
    def lines(self, scope_prefix: str = "") -> list[LineState]:
        with self._book.lock:
            return [
                LineState(
                    k,
                    v.limit if v.override is None else v.override,
                    v.spent,
                    v.held,
                    v.overrun,
                    v.blocked,
                )
                for k, v in sorted(self._book.lines.items(), key=lambda kv: str(kv[0]))
                if k.scope.startswith(scope_prefix)
            ]

    def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        with self._book.lock:
            return [
                self._record(rid, h)
                for rid, h in self._book.holds.items()
                if h.state is HoldState.HELD
                and any(k.scope.startswith(scope_prefix) for k in h.amounts)
            ]

    def hold(self, rid: str) -> HoldRecord | None:
        with self._book.lock:
            h = self._book.holds.get(rid)
            return None if h is None else self._record(rid, h)

    @staticmethod
    def _record(rid: str, h: _Hold) -> HoldRecord:
        return HoldRecord(
            rid,
            h.state,
            dict(h.amounts),
            dict(h.charged),
            h.created_ms,
            h.expires_at_ms,
            h.on_expiry,
            h.settled_ms,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._book.lock:
            return self._book.events[after_seq : after_seq + limit]

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        with self._book.lock:
            line = self._book.lines.setdefault(key, _Line(limit or 0))
            line.override = limit

    def block(self, key: LineKey, reason: str | None) -> None:
        with self._book.lock:
            line = self._book.lines.setdefault(key, _Line(0))
            line.blocked = reason

    def purge(self, settled_before_ms: int) -> int:
        with self._book.lock:
            old = [
                rid
                for rid, h in self._book.holds.items()
                if h.settled_ms is not None and h.settled_ms < settled_before_ms
            ]
            for rid in old:
                del self._book.holds[rid]
            return len(old)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        """Nothing to close; named books live as long as the process."""
