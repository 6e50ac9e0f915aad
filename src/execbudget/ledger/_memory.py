"""
``memory://``: the reference backend, in-process, under one lock.

It is the contract in its plainest form (the SQL and Lua backends do the same steps), used
by tests and single-process programs. ``memory://NAME`` shares one book per name inside a
process, so two ``Ledger.from_url("memory://x")`` see the same lines.

Representation, chosen for the hot path (one reserve + one commit per model call):

* **Chains are interned.** The first reserve on a tuple of line keys registers it as a
  ``_Chain`` (its keys, dimensions and, once they all exist, its ``_Line`` objects), so
  later reserves find every line with one dict lookup instead of one per line.
* **Holds and log entries are plain tuples of atoms** (ints, strings, ``None``): the chain
  by number, per-line amounts as a tuple in chain order, states and event kinds as small
  ints. Such tuples are untracked by the cyclic garbage collector after its first pass, so
  millions of tombstones and log entries do not make every full collection slower, as
  dataclasses and dicts keyed by ``LineKey`` (a tuple subclass, never untracked) did.
* **Public objects are built when read.** ``events()``, ``hold()`` and ``holds()`` turn
  those tuples into ``Event`` and ``HoldRecord`` with ``{LineKey: amount}`` maps on demand;
  the books and their meaning are exactly those of the plain version.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError
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

# Hold states and event kinds as small ints (see the module docstring: atoms only).
_HELD: Final = 0
_STATES: Final = (
    HoldState.HELD,
    HoldState.COMMITTED,
    HoldState.RELEASED,
    HoldState.EXPIRED,
    HoldState.EXPIRED_CHARGE,
)
_KINDS: Final = ("reserve", "commit", "release", "expire", "expire_charge")
_RESERVE: Final = 0
#: settle mode → its code, both as the hold's new state and as the event kind
_MODE_CODE: Final = {
    SettleMode.COMMIT: 1,
    SettleMode.RELEASE: 2,
    SettleMode.EXPIRE: 3,
    SettleMode.EXPIRE_CHARGE: 4,
}

# Hold tuple fields: (chain, amounts, created_ms, expires_ms, charge_on_expiry, state,
# charged, settled_ms). ``charged`` and ``settled_ms`` are None while held.
_Hold = tuple[int, tuple[int, ...], int, int, bool, int, tuple[int, ...] | None, int | None]
# Log entry fields: (ts_ms, kind, rid, chain, amounts held or charged, in chain order).
_Entry = tuple[int, int, str, int, tuple[int, ...]]

_CHARGE: Final = OnExpiry.CHARGE
_COMMIT: Final = SettleMode.COMMIT
_EXPIRE_CHARGE: Final = SettleMode.EXPIRE_CHARGE
_OK: Final = ReserveStatus.OK
_S_OK: Final = SettleStatus.OK
_S_OVERRUN: Final = SettleStatus.OVERRUN
#: ``tuple.__new__(Cls, values)`` builds a NamedTuple without its Python-level ``__new__``.
_new = tuple.__new__


@dataclass(slots=True)
class _Line:
    limit: int  # the policy's limit, as passed by the latest reserve
    override: int | None = None  # an operator's limit, which wins until cleared
    spent: int = 0
    held: int = 0
    overrun: int = 0
    blocked: str | None = None
    #: What a reserve may fill up to: the limit in force, or -1 while blocked (so no
    #: amount fits). Kept by ``recap`` whenever limit, override or blocked change, it lets
    #: the hot path test one number per line instead of three fields.
    cap: int = -1

    def __post_init__(self) -> None:
        self.recap()

    def recap(self) -> None:
        if self.blocked is not None:
            self.cap = -1
        else:
            self.cap = self.limit if self.override is None else self.override


class _Chain:
    """One distinct tuple of line keys that some reserve used (a chain, interned)."""

    __slots__ = ("dim", "dims", "keys", "lines", "number", "zeros")

    def __init__(self, number: int, keys: tuple[LineKey, ...]) -> None:
        self.number = number
        self.keys = keys
        self.dims = tuple(k[2] for k in keys)
        #: the one dimension of every line, or None for a chain of several
        self.dim = self.dims[0] if len(set(self.dims)) == 1 else None
        self.zeros = (0,) * len(keys)
        #: the lines, once every one of them exists (lines are never deleted)
        self.lines: list[_Line] | None = None

    def as_map(self, values: Sequence[int]) -> dict[LineKey, int]:
        return dict(zip(self.keys, values, strict=True))


class _Book:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: dict[LineKey, _Line] = {}
        self.holds: dict[str, _Hold] = {}
        self.log: list[_Entry] = []
        self.chains: dict[tuple[LineKey, ...], _Chain] = {}
        self.chain_list: list[_Chain] = []

    def chain(self, keys: tuple[LineKey, ...]) -> _Chain:
        """Intern a chain (under the lock). A key twice in one chain is refused."""
        if len(set(keys)) != len(keys):
            raise ConfigurationError("a line appears twice in one reserve; merge its amounts")
        chain = _Chain(len(self.chain_list), keys)
        self.chains[keys] = chain
        self.chain_list.append(chain)
        return chain


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
        # One C-level transpose gives the keys (to find the chain) and the amounts (for the
        # hold and the log), cheaper than two comprehensions.
        # A one-line chain (a run limiting its steps) unpacks its only line, cheaper still.
        keys: tuple[LineKey, ...]
        limits: tuple[int, ...]
        amounts: tuple[int, ...]
        if len(lines) == 1:
            ((key, limit, amount, _),) = lines
            keys, limits, amounts = (key,), (limit,), (amount,)
        elif lines:
            keys, limits, amounts, _ = zip(*lines, strict=True)
        else:
            keys = limits = amounts = ()
        now = self.clock.now_ms()
        with book.lock:
            holds = book.holds
            existing = holds.get(rid)
            if existing is not None:
                status = ReserveStatus.DUP if existing[5] == _HELD else ReserveStatus.SETTLED
                return ReserveOutcome(status, existing[3])
            chain = book.chains.get(keys)
            if chain is None:
                chain = book.chain(keys)
            found = chain.lines
            if found is not None and not charge_now:
                # Hot path: a known chain whose policy limits did not change. Check and hold
                # line by line; on the first line that does not fit, undo the lines already
                # held and let the general path find the denial. Nothing else happened in
                # between (we hold the lock), so the books are as if nothing was written.
                # No ``strict``: the chain was found by ``keys``, so ``found``, ``limits`` and
                # ``amounts`` have its length by construction (and the keyword costs ~0.1 µs).
                for line, limit, amount in zip(found, limits, amounts):  # noqa: B905
                    if line.limit != limit or line.spent + line.held + amount > line.cap:
                        for undo, undo_amount in zip(found, amounts, strict=True):
                            if undo is line:
                                break
                            undo.held -= undo_amount
                        break
                    line.held += amount
                else:
                    expires = now + ttl_ms
                    n = chain.number
                    charge = on_expiry is _CHARGE
                    holds[rid] = (n, amounts, now, expires, charge, _HELD, None, None)
                    book.log.append((now, _RESERVE, rid, n, amounts))
                    return _new(ReserveOutcome, (_OK, expires, None, None))
            elif found is not None:
                # The same hot path for ``charge_now`` (a step, a retry, a tool call): spend
                # at once. Written out rather than shared, as above: a helper call per line
                # would cost more than the check itself.
                for line, limit, amount in zip(found, limits, amounts):  # noqa: B905
                    if line.limit != limit or line.spent + line.held + amount > line.cap:
                        for undo, undo_amount in zip(found, amounts, strict=True):
                            if undo is line:
                                break
                            undo.spent -= undo_amount
                        break
                    line.spent += amount
                else:
                    expires = now + ttl_ms
                    n = chain.number
                    charge = on_expiry is _CHARGE
                    holds[rid] = (n, amounts, now, expires, charge, 1, amounts, now)
                    book.log.append((now, _RESERVE, rid, n, amounts))
                    book.log.append((now, 1, rid, n, amounts))
                    return _new(ReserveOutcome, (_OK, expires, None, None))
            return self._reserve_general(
                chain, rid, lines, amounts, now, ttl_ms, on_expiry, charge_now
            )

    def _reserve_general(
        self,
        chain: _Chain,
        rid: str,
        lines: Sequence[LineRequest],
        amounts: tuple[int, ...],
        now: int,
        ttl_ms: int,
        on_expiry: OnExpiry,
        charge_now: bool,
    ) -> ReserveOutcome:
        """Every other reserve: a new chain, a changed limit, ``charge_now``, a denial."""
        book = self._book
        found: Sequence[_Line | None] = chain.lines or [book.lines.get(r.key) for r in lines]
        # Phase 1: check every line; nothing is written before all of them grant.
        for req, line in zip(lines, found, strict=True):
            if line is None:
                limit, used, blocked = req.limit, 0, None
            else:
                limit = req.limit if line.override is None else line.override
                used, blocked = line.spent + line.held, line.blocked
            if blocked is not None or used + req.amount > limit:
                return self._denied(lines, found)
        # Phase 2: apply to every line.
        for req, line in zip(lines, found, strict=True):
            if line is None:
                line = book.lines[req.key] = _Line(req.limit)
            elif line.limit != req.limit:
                line.limit = req.limit
                line.recap()
            if charge_now:
                line.spent += req.amount
            else:
                line.held += req.amount
        if chain.lines is None:
            chain.lines = [book.lines[k] for k in chain.keys]
        expires = now + ttl_ms
        charge = on_expiry is _CHARGE
        n = chain.number
        book.log.append((now, _RESERVE, rid, n, amounts))
        if charge_now:
            book.holds[rid] = (n, amounts, now, expires, charge, 1, amounts, now)
            book.log.append((now, 1, rid, n, amounts))
        else:
            book.holds[rid] = (n, amounts, now, expires, charge, _HELD, None, None)
        return ReserveOutcome(ReserveStatus.OK, expires)

    @staticmethod
    def _denied(lines: Sequence[LineRequest], found: Sequence[_Line | None]) -> ReserveOutcome:
        """The first line that refuses, with its books (called before anything is written)."""
        for i, (req, line) in enumerate(zip(lines, found, strict=True)):
            if line is None:
                limit, spent, held, blocked = req.limit, 0, 0, None
            else:
                limit = req.limit if line.override is None else line.override
                spent, held, blocked = line.spent, line.held, line.blocked
            if blocked is not None or spent + held + req.amount > limit:
                denial = Denial(i, req.key, limit, spent, held, req.amount, blocked or "limit")
                return ReserveOutcome(ReserveStatus.DENIED, denial=denial)
        raise AssertionError("no line refused")  # pragma: no cover

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        book = self._book
        now = self.clock.now_ms()
        with book.lock:
            hold = book.holds.get(rid)
            if hold is None:
                return SettleOutcome(SettleStatus.UNKNOWN)
            n, amounts, created, expires, charge, state, charged, _ = hold
            chain = book.chain_list[n]
            if state != _HELD:
                assert charged is not None
                return SettleOutcome(SettleStatus.SETTLED, chain.as_map(charged))
            if mode is _COMMIT:
                if not actual:
                    charged = amounts
                elif chain.dim is not None:  # one dimension: one lookup, not one per line
                    cost = actual.get(chain.dim)
                    charged = amounts if cost is None else (cost,) * len(amounts)
                else:
                    get = actual.get
                    charged = tuple([get(d, a) for d, a in zip(chain.dims, amounts, strict=True)])
            elif mode is _EXPIRE_CHARGE:
                charged = amounts
            else:
                charged = chain.zeros
            lines = chain.lines
            assert lines is not None  # a hold exists, so its lines do
            overrun = False
            for line, amount, cost in zip(lines, amounts, charged, strict=True):
                line.held -= amount
                line.spent += cost
                if cost > amount:
                    overrun = True
                    line.overrun += cost - amount
                    line.blocked = line.blocked or "overrun"
                    line.recap()
            code = _MODE_CODE[mode]
            book.holds[rid] = (n, amounts, created, expires, charge, code, charged, now)
            book.log.append((now, code, rid, n, charged))
            return _new(
                SettleOutcome,
                (_S_OVERRUN if overrun else _S_OK, dict(zip(chain.keys, charged, strict=True))),
            )

    def extend(self, rid: str, ttl_ms: int) -> bool:
        with self._book.lock:
            hold = self._book.holds.get(rid)
            if hold is None or hold[5] != _HELD:
                return False
            n, amounts, created, _, charge, state, charged, settled = hold
            expires = self.clock.now_ms() + ttl_ms
            self._book.holds[rid] = (n, amounts, created, expires, charge, state, charged, settled)
            return True

    def reap(self, limit: int = 200) -> int:
        now = self.clock.now_ms()
        with self._book.lock:
            due = sorted(
                (h[3], rid, h[4])
                for rid, h in self._book.holds.items()
                if h[5] == _HELD and h[3] <= now
            )[:limit]
        done = 0
        for _, rid, charge in due:
            mode = SettleMode.EXPIRE_CHARGE if charge else SettleMode.EXPIRE
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

    def read_lines(self, keys: Sequence[LineKey]) -> list[LineState | None]:
        """The named lines, in order; None for a line no reserve has created yet."""
        with self._book.lock:
            found = [self._book.lines.get(k) for k in keys]
            return [
                None
                if v is None
                else LineState(
                    k,
                    v.limit if v.override is None else v.override,
                    v.spent,
                    v.held,
                    v.overrun,
                    v.blocked,
                )
                for k, v in zip(keys, found, strict=True)
            ]

    def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        with self._book.lock:
            chains = self._book.chain_list
            return [
                self._to_record(rid, h)
                for rid, h in self._book.holds.items()
                if h[5] == _HELD
                and any(k.scope.startswith(scope_prefix) for k in chains[h[0]].keys)
            ]

    def hold(self, rid: str) -> HoldRecord | None:
        with self._book.lock:
            h = self._book.holds.get(rid)
            return None if h is None else self._to_record(rid, h)

    def _to_record(self, rid: str, h: _Hold) -> HoldRecord:
        n, amounts, created, expires, charge, state, charged, settled = h
        chain = self._book.chain_list[n]
        return HoldRecord(
            rid,
            _STATES[state],
            chain.as_map(amounts),
            {} if charged is None else chain.as_map(charged),
            created,
            expires,
            OnExpiry.CHARGE if charge else OnExpiry.RELEASE,
            settled,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        start = max(0, after_seq)
        with self._book.lock:
            chains = self._book.chain_list
            entries = self._book.log[start : start + limit]
            return [
                Event(start + i + 1, ts, _KINDS[kind], rid, chains[n].as_map(values))
                for i, (ts, kind, rid, n, values) in enumerate(entries)
            ]

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        with self._book.lock:
            line = self._book.lines.setdefault(key, _Line(limit or 0))
            line.override = limit
            line.recap()

    def block(self, key: LineKey, reason: str | None) -> None:
        with self._book.lock:
            line = self._book.lines.setdefault(key, _Line(0))
            line.blocked = reason
            line.recap()

    def purge(self, settled_before_ms: int) -> int:
        with self._book.lock:
            old = [
                rid
                for rid, h in self._book.holds.items()
                if h[7] is not None and h[7] < settled_before_ms
            ]
            for rid in old:
                del self._book.holds[rid]
            return len(old)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        """Nothing to close; named books live as long as the process."""
