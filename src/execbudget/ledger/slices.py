"""
Slices (escrow leases): serve holds on hot lines locally, from capacity leased from a
shared ledger, with zero overshoot.

A node wraps the shared storage (Redis, PostgreSQL, SQLite, …) in a ``SlicedStorage``.
For each distinct chain (a *group*: the tuple of its line keys) the node holds one or more
**leases**: ordinary reservations on the shared storage, on the same lines, with
``on_expiry=CHARGE`` (a dead node may have spent any part of them). Calls then reserve and
commit against the group's local books, whose lines are capped at what the leases granted,
so the node can never hand out more than it holds.

* **Top-up, exact.** When a call does not fit the local capacity, the node leases the
  shortfall plus a *slice* (``calls_per_slice`` times the call's amounts); if that is
  refused, the shortfall alone. The shared store then checks exactly
  ``spent + held + amount ≤ limit`` as a direct hold would, so a denial names the same
  line, and nothing is granted that a direct hold would refuse.
* **Direct mode.** Once a slice is refused the remaining budget is small: the group stops
  asking for headroom and leases only each call's shortfall (in effect direct holds), so
  no capacity is stranded near exhaustion. It retries slices after ``direct_retry_ms``.
* **Refill early.** After a local grant leaves less than ``refill_fraction`` of a slice
  free, the node tops up by a slice while it still has room.
* **Report and return.** When a group has no hold in flight and its last report is older
  than ``report_every_ms`` (or on ``close()``, or idle in ``tick()``), its leases are
  committed with what was spent locally (spread over the leases, never above a lease
  except for a real overrun) and the unused remainder returns to the shared budget.
* **Leases outlive their holds**: a lease's TTL is at least the longest hold it covers
  plus ``lease_margin_ms``, and open leases are extended before they run out.

Local books, built for the per-call path (the reference ``MemoryStorage`` semantics, on a
cheaper representation):

* **Lanes.** The lines of one dimension in a group almost always move together: a call
  holds the same amount on org, team, run and agent, and a commit charges one actual per
  dimension. So a group keeps, per dimension (a *lane*), one ``spent`` and one ``held``
  shared by its lines, plus per-line *extras* that stay zero unless a call holds
  different amounts on lines of one dimension. A line's books are lane + extra.
* **Precomputed headroom.** ``lane.room`` is the least, over the lane's lines, of the
  local cap (``min(leased capacity, limit)``, or -1 while the line is blocked) minus the
  line's extras, recomputed only when caps, blocks or extras change. A uniform call fits
  iff ``lane.spent + lane.held + amount ≤ lane.room``: one comparison for the whole chain.
* **Atoms only.** Holds and log entries are tuples of ints and strings (the group by
  number, one amount when every line holds the same), which the garbage collector stops
  tracking; ``events()``, ``holds()`` and ``hold()`` build the public objects when read.
* **Gates.** The due times of the next keep-alive and report are precomputed, so a call
  compares the clock with two numbers instead of walking the leases.

``LocalChain`` (from ``SlicedStorage.chain(lines)``) is the fast path for one fixed chain
of one dimension: ``reserve(amount)`` / ``commit(rid, actual)`` under the node's lock,
with no validation of the chain per call and no ``LineRequest`` objects. Anything out of
the ordinary (a top-up, a denial, a refill, a report, a keep-alive, a changed limit, an
overrun) falls through to the same general path the ``Storage`` methods use.

Views: ``lines()`` are the shared lines with this node's leases replaced by its local
truth (exact when this node is the only user; other nodes' leases show as held).
``events()``, ``holds()`` and ``hold()`` are this node's per-call log and holds.

Bounds: overshoot 0 (every local grant is inside a lease the shared store granted);
stranded capacity ≤ the free part of open leases (``stranded()``), returned on report,
idle or close; over-counting when one dimension has different amounts on lines of one
chain (the lease is charged the largest, per dimension, since a commit is per dimension).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError
from ..units import check_units
from ._ledger import (
    _MAX_RID,
    _MAX_UNITS,
    DEFAULT_TTL_S,
    _reraise,
    check_reserve,
    check_rid,
    denial_error,
    new_rid,
)
from ._storage import Storage
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

_NEVER: Final = 2**63  # a due time that never comes
_HELD: Final = 0
_COMMITTED: Final = 1
_STATES: Final = (
    HoldState.HELD,
    HoldState.COMMITTED,
    HoldState.RELEASED,
    HoldState.EXPIRED,
    HoldState.EXPIRED_CHARGE,
)
_KINDS: Final = ("reserve", "commit", "release", "expire", "expire_charge")
_MODE_CODE: Final = {
    SettleMode.COMMIT: 1,
    SettleMode.RELEASE: 2,
    SettleMode.EXPIRE: 3,
    SettleMode.EXPIRE_CHARGE: 4,
}
_CHARGE: Final = OnExpiry.CHARGE
_OK: Final = ReserveStatus.OK
_S_OK: Final = SettleStatus.OK
_new = tuple.__new__  # builds a NamedTuple without its Python-level ``__new__``

#: One amount for every line of the chain (an int), or one per line (a tuple).
_Amounts = int | tuple[int, ...]
# Hold: (group, amounts, created_ms, expires_ms, charge_on_expiry, state, charged,
# settled_ms); charged and settled_ms are None while held.
_Hold = tuple[int, _Amounts, int, int, bool, int, _Amounts | None, int | None]
# Log entry: (ts_ms, kind, rid, group, amounts held or charged).
_Entry = tuple[int, int, str, int, _Amounts]


def _expand(values: _Amounts, n: int) -> tuple[int, ...]:
    return (values,) * n if type(values) is int else values  # type: ignore[return-value]


def _compact(values: tuple[int, ...]) -> _Amounts:
    """One int when every line has the same amount (the usual case), else the tuple."""
    if values and values.count(values[0]) == len(values):
        return values[0]
    return values


@dataclass(slots=True)
class _Lease:
    rid: str
    amounts: dict[str, int]  # per dimension, on every line of that dimension
    expires_ms: int


class _Lane:
    """The lines of one dimension in a group: their common books (see the module doc)."""

    __slots__ = ("capacity", "dim", "held", "index", "room", "spent")

    def __init__(self, dim: str, index: tuple[int, ...]) -> None:
        self.dim = dim
        self.index = index  # positions of its lines in the chain
        self.spent = 0  # common part of the lines' spent
        self.held = 0  # common part of the lines' held
        self.room = 0  # lane usage may grow up to this (least cap minus extras)
        self.capacity = 0  # leased for this dimension: reported + open leases


@dataclass(slots=True)
class _Group:
    gid: int
    keys: tuple[LineKey, ...]
    dims: tuple[str, ...]
    limits: tuple[int, ...]  # policy limit per line, as passed by the latest reserve
    lanes: tuple[_Lane, ...]
    lane_of: tuple[_Lane, ...]  # the lane of each line
    xspent: list[int]  # per-line extras (zero unless amounts differed within a lane)
    xheld: list[int]
    caps: list[int]  # local cap per line: min(leased capacity, limit)
    blocked: list[str | None]  # per line: "killed", "overrun", … or None
    single: _Lane | None  # the lane, when the chain has one dimension
    leases: list[_Lease] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # charged via closed leases
    extras: bool = False  # some extra is not zero
    direct_until_ms: int = 0
    last_report_ms: int = 0
    report_due_ms: int = 0  # last_report_ms + report_every_ms
    last_used_ms: int = 0
    longest_ttl_ms: int = 0
    renew_at_ms: int = _NEVER  # from then on, some open lease needs extending
    dirty: bool = True  # local caps must be set again
    #: ``LocalChain`` serves calls alone before this time: renew_at_ms, or 0 while caps
    #: are stale or extras exist (one comparison for three conditions; see ``regate``)
    fast_until_ms: int = 0

    def open(self, dim: str) -> int:
        return sum(lease.amounts.get(dim, 0) for lease in self.leases)

    def books(self, i: int) -> tuple[int, int]:
        """(spent, held) of line ``i`` in the local books."""
        lane = self.lane_of[i]
        return lane.spent + self.xspent[i], lane.held + self.xheld[i]

    def any_held(self) -> bool:
        if self.single is not None and not self.extras:
            return self.single.held != 0
        return any(lane.held for lane in self.lanes) or any(self.xheld)

    def rooms(self) -> None:
        """Recompute every lane's headroom (after caps, blocks or extras changed)."""
        self.extras = any(self.xspent) or any(self.xheld)
        for lane in self.lanes:
            lane.room = min(
                (-1 if self.blocked[i] is not None else self.caps[i])
                - self.xspent[i]
                - self.xheld[i]
                for i in lane.index
            )
        self.regate()

    def regate(self) -> None:
        """Call after ``dirty``, ``extras`` or ``renew_at_ms`` change."""
        self.fast_until_ms = 0 if self.dirty or self.extras else self.renew_at_ms


class SlicedStorage:
    """A ``Storage`` that serves holds from leases (slices) of a shared storage."""

    scheme: ClassVar[str] = "sliced"

    def __init__(
        self,
        base: Storage,
        *,
        node: str | None = None,
        calls_per_slice: int = 64,
        refill_fraction: float = 0.25,
        report_every_ms: int = 2_000,
        idle_ms: int = 10_000,
        lease_ttl_ms: int = 60_000,
        lease_margin_ms: int = 30_000,
        direct_retry_ms: int = 5_000,
        clock: Clock = SYSTEM_CLOCK,
        own_base: bool = True,
    ) -> None:
        self.base = base
        self.base_exceptions = base.base_exceptions
        self.node = node or uuid.uuid4().hex[:12]
        self.calls_per_slice = calls_per_slice
        self.refill_fraction = refill_fraction
        self.report_every_ms = report_every_ms
        self.idle_ms = idle_ms
        self.lease_ttl_ms = lease_ttl_ms
        self.lease_margin_ms = lease_margin_ms
        self.direct_retry_ms = direct_retry_ms
        self.clock = clock
        self.own_base = own_base
        self._lock = threading.RLock()
        self._groups: dict[tuple[LineKey, ...], _Group] = {}
        self._group_list: list[_Group] = []
        self._by_key: dict[LineKey, list[tuple[_Group, int]]] = {}
        self._holds: dict[str, _Hold] = {}
        self._log: list[_Entry] = []
        self._overrides: dict[LineKey, int] = {}
        self._blocked: dict[LineKey, str] = {}
        self._seq = itertools.count(1)
        self.base_calls = 0  # leases, top-ups, reports: what the shared store sees

    # -- groups --------------------------------------------------------------------------
    def _group(self, keys: tuple[LineKey, ...], limits: tuple[int, ...]) -> _Group:
        group = self._groups.get(keys)
        if group is None:
            if len(set(keys)) != len(keys):
                raise ConfigurationError("a line appears twice in one reserve; merge its amounts")
            dims = tuple(k.dimension for k in keys)
            lanes = tuple(
                _Lane(d, tuple(i for i, x in enumerate(dims) if x == d))
                for d in dict.fromkeys(dims)
            )
            by_dim = {lane.dim: lane for lane in lanes}
            n = len(keys)
            group = _Group(
                gid=len(self._group_list),
                keys=keys,
                dims=dims,
                limits=limits,
                lanes=lanes,
                lane_of=tuple(by_dim[d] for d in dims),
                xspent=[0] * n,
                xheld=[0] * n,
                caps=[0] * n,
                blocked=[self._blocked.get(k) for k in keys],
                single=lanes[0] if len(lanes) == 1 else None,
            )
            group.last_report_ms = self.clock.now_ms()
            group.report_due_ms = group.last_report_ms + self.report_every_ms
            self._groups[keys] = group
            self._group_list.append(group)
            for i, key in enumerate(keys):
                self._by_key.setdefault(key, []).append((group, i))
            group.rooms()
        return group

    def _usage(self, group: _Group) -> list[tuple[int, int]]:
        """(spent, held) of each line of the group, in the local books."""
        return [group.books(i) for i in range(len(group.keys))]

    def _set_caps(self, group: _Group) -> None:
        group.dirty = False
        for i, key in enumerate(group.keys):
            limit = self._overrides.get(key, group.limits[i])
            group.caps[i] = min(group.lane_of[i].capacity, limit)
        group.rooms()

    def _recount(self, group: _Group) -> None:
        """Capacity changed (a lease came or went): cache it, reset the caps and gates."""
        for lane in group.lanes:
            lane.capacity = group.reported.get(lane.dim, 0) + group.open(lane.dim)
        self._renew_gate(group)
        self._set_caps(group)

    def _renew_gate(self, group: _Group) -> None:
        """When ``_keep_alive`` will next have something to do (see its condition)."""
        if group.leases:
            soonest = min(lease.expires_ms for lease in group.leases)
            group.renew_at_ms = soonest - group.longest_ttl_ms - self.lease_margin_ms // 2
        else:
            group.renew_at_ms = _NEVER
        group.regate()

    # -- leases ------------------------------------------------------------------------
    def _lease(
        self, group: _Group, lines: Sequence[LineRequest], amounts: Mapping[str, int]
    ) -> ReserveOutcome:
        """Lease ``amounts`` (per dimension) on the group's lines from the shared store."""
        rid = f"slice:{self.node}:{group.gid + 1}:{next(self._seq)}"
        ttl = max(self.lease_ttl_ms, group.longest_ttl_ms + self.lease_margin_ms)
        requests = [
            LineRequest(r.key, r.limit, amounts.get(r.key.dimension, 0), r.window_end_ms)
            for r in lines
        ]
        self.base_calls += 1
        outcome = self.base.reserve(rid, requests, ttl, on_expiry=OnExpiry.CHARGE)
        if outcome.status is ReserveStatus.OK:
            group.leases.append(_Lease(rid, dict(amounts), self.clock.now_ms() + ttl))
            self._recount(group)
        return outcome

    def _top_up(
        self, group: _Group, lines: Sequence[LineRequest], shortfall: Mapping[str, int]
    ) -> ReserveOutcome:
        now = self.clock.now_ms()
        if now >= group.direct_until_ms:
            slice_ = {
                d: shortfall.get(d, 0) + self.calls_per_slice * self._per_call(lines, d)
                for d in set(group.dims)
            }
            outcome = self._lease(group, lines, slice_)
            if outcome.status is ReserveStatus.OK:
                return outcome
            group.direct_until_ms = now + self.direct_retry_ms  # the budget is nearly spent
        return self._lease(group, lines, shortfall)

    @staticmethod
    def _per_call(lines: Sequence[LineRequest], dim: str) -> int:
        return max((r.amount for r in lines if r.key.dimension == dim), default=0)

    def _shortfall(self, group: _Group, amounts: Sequence[int]) -> dict[str, int]:
        short: dict[str, int] = {}
        for i, amount in enumerate(amounts):
            spent, held = group.books(i)
            lane = group.lane_of[i]
            need = spent + held + amount - lane.capacity
            if need > short.get(lane.dim, 0):
                short[lane.dim] = need
        return short

    def _keep_alive(self, group: _Group) -> None:
        """Extend open leases that would not outlive the holds they cover."""
        if not group.leases:
            return
        now = self.clock.now_ms()
        floor = now + group.longest_ttl_ms + self.lease_margin_ms // 2
        for lease in group.leases:
            if lease.expires_ms < floor:
                ttl = group.longest_ttl_ms + self.lease_margin_ms
                self.base_calls += 1
                if self.base.extend(lease.rid, ttl):
                    lease.expires_ms = now + ttl
        self._renew_gate(group)

    def _report(self, group: _Group, *, charge_held: bool = False) -> None:
        """Commit the group's leases with what was spent locally; free the rest."""
        if not group.leases:
            return
        spent: dict[str, int] = {}
        for dim, (s, h) in zip(group.dims, self._usage(group), strict=True):
            total = s + (h if charge_held else 0)
            spent[dim] = max(spent.get(dim, 0), total)
        left = {d: max(0, spent[d] - group.reported.get(d, 0)) for d in spent}
        for i, lease in enumerate(group.leases):
            last = i == len(group.leases) - 1
            charge = {}
            for dim in spent:
                take = left[dim] if last else min(left[dim], lease.amounts.get(dim, 0))
                charge[dim] = take
                left[dim] -= take
                group.reported[dim] = group.reported.get(dim, 0) + take
            self.base_calls += 1
            self.base.settle(lease.rid, SettleMode.COMMIT, charge)
        group.leases.clear()
        group.last_report_ms = self.clock.now_ms()
        group.report_due_ms = group.last_report_ms + self.report_every_ms
        self._recount(group)

    def _maybe_report(self, group: _Group) -> None:
        if group.any_held():
            return
        now = self.clock.now_ms()
        # Near exhaustion (direct mode) every unused unit must go back at once, or it is
        # stranded while other nodes are being denied.
        if now < group.direct_until_ms or now >= group.report_due_ms:
            self._report(group)

    # -- operations --------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        if lines:
            keys, limits, amounts, _ = zip(*lines, strict=True)
        else:
            keys = limits = amounts = ()
        with self._lock:
            group = self._groups.get(keys) or self._group(keys, limits)
            existing = self._holds.get(rid)
            if existing is not None:  # a retry: DUP or SETTLED, nothing changes
                status = ReserveStatus.DUP if existing[5] == _HELD else ReserveStatus.SETTLED
                return ReserveOutcome(status, existing[3])
            return self._reserve(group, rid, lines, limits, amounts, ttl_ms, on_expiry, charge_now)

    def _reserve(
        self,
        group: _Group,
        rid: str,
        lines: Sequence[LineRequest],
        limits: tuple[int, ...],
        amounts: tuple[int, ...],
        ttl_ms: int,
        on_expiry: OnExpiry,
        charge_now: bool,
    ) -> ReserveOutcome:
        """The general path (under the lock; ``rid`` is new)."""
        now = self.clock.now_ms()
        group.last_used_ms = now
        if group.limits is not limits:
            if group.limits != limits:
                group.dirty = True
                group.regate()
            group.limits = limits
        if ttl_ms > group.longest_ttl_ms:
            group.longest_ttl_ms = ttl_ms
            self._renew_gate(group)
        if group.dirty:
            self._set_caps(group)
        if now >= group.renew_at_ms:
            self._keep_alive(group)
        refusal = self._hold(group, rid, amounts, now, ttl_ms, on_expiry, charge_now)
        if refusal is not None:
            level, reason = refusal
            if not self._capacity_bound(group, level, reason):
                return _denied(self._logical(group, level, amounts[level], reason))
            # Lease the shortfall (plus a slice when there is room), then try again: the
            # shared store has just checked exactly what a direct hold would.
            lease = self._top_up(group, lines, self._shortfall(group, amounts))
            if lease.denial is not None:
                return _denied(self._shared(lease.denial))
            refusal = self._hold(group, rid, amounts, now, ttl_ms, on_expiry, charge_now)
            if refusal is not None:  # blocked meanwhile, or a limit below the lease
                level, reason = refusal
                return _denied(self._logical(group, level, amounts[level], reason))
        if charge_now:
            self._maybe_report(group)
        else:
            lane = group.single
            if (
                lane is None
                or group.extras
                or lane.capacity - lane.spent - lane.held
                < self.refill_fraction * self.calls_per_slice * max(amounts)
            ):  # (else no line is short: _refill_early would return without a lease)
                self._refill_early(group, lines)
        return ReserveOutcome(ReserveStatus.OK, now + ttl_ms)

    def _hold(
        self,
        group: _Group,
        rid: str,
        amounts: tuple[int, ...],
        now: int,
        ttl_ms: int,
        on_expiry: OnExpiry,
        charge_now: bool,
    ) -> tuple[int, str] | None:
        """
        The reference reserve on the local books: check every line, then hold (or charge)
        on all of them. Returns None when granted, else (first refusing line, reason).
        """
        lane = group.single
        compact: _Amounts
        if (
            lane is not None
            and not group.extras
            and amounts.count(amounts[0]) == len(amounts)  # (a single lane has lines)
            and lane.spent + lane.held + amounts[0] <= lane.room
        ):
            # Uniform on one lane, and it fits: one comparison stood for every line.
            compact = amounts[0]
            if charge_now:
                lane.spent += compact
            else:
                lane.held += compact
        else:
            for i, amount in enumerate(amounts):
                spent, held = group.books(i)
                blocked = group.blocked[i]
                if blocked is not None or spent + held + amount > group.caps[i]:
                    return i, blocked or "limit"
            touched = False
            for ln in group.lanes:
                least = min(amounts[i] for i in ln.index)
                if charge_now:
                    ln.spent += least
                else:
                    ln.held += least
                for i in ln.index:
                    extra = amounts[i] - least
                    if extra:
                        touched = True
                        if charge_now:
                            group.xspent[i] += extra
                        else:
                            group.xheld[i] += extra
            if touched:
                group.rooms()
            compact = _compact(amounts)
        charge = on_expiry is _CHARGE
        gid = group.gid
        expires = now + ttl_ms
        self._log.append((now, 0, rid, gid, compact))
        if charge_now:
            self._holds[rid] = (gid, compact, now, expires, charge, _COMMITTED, compact, now)
            self._log.append((now, _COMMITTED, rid, gid, compact))
        else:
            self._holds[rid] = (gid, compact, now, expires, charge, _HELD, None, None)
        return None

    def _capacity_bound(self, group: _Group, level: int, reason: str) -> bool:
        """Was the local refusal only for lack of leased capacity (then lease more)?"""
        if reason != "limit":
            return False
        key = group.keys[level]
        limit = self._overrides.get(key, group.limits[level])
        return group.lane_of[level].capacity < limit

    def _refill_early(self, group: _Group, lines: Sequence[LineRequest]) -> None:
        if not group.leases or self.clock.now_ms() < group.direct_until_ms:
            return
        low = self.refill_fraction * self.calls_per_slice
        for i, req in enumerate(lines):
            spent, held = group.books(i)
            if group.lane_of[i].capacity - spent - held < low * req.amount:
                slice_all = {d: self.calls_per_slice * self._per_call(lines, d) for d in group.dims}
                outcome = self._lease(group, lines, slice_all)
                if outcome.status is not ReserveStatus.OK:
                    group.direct_until_ms = self.clock.now_ms() + self.direct_retry_ms
                return

    def _logical(self, group: _Group, level: int, requested: int, reason: str) -> Denial:
        """A local refusal, stated on the shared line with this node's books."""
        key = group.keys[level]
        limit = self._overrides.get(key, group.limits[level])
        _, _, spent, held = self._ours(key)
        return Denial(level, key, limit, spent, held, requested, reason)

    def _shared(self, denial: Denial) -> Denial:
        """A shared-store denial of a lease, restated in the terms of the call."""
        reported, open_, spent, held = self._ours(denial.key)
        return Denial(
            denial.level,
            denial.key,
            denial.limit,
            denial.spent - reported + spent,
            denial.held - open_ + held,
            denial.requested,
            denial.reason,
        )

    def _ours(self, key: LineKey) -> tuple[int, int, int, int]:
        """This node's (reported, open lease, local spent, local held) on a shared line."""
        reported = open_ = spent = held = 0
        for group, i in self._by_key.get(key, ()):
            reported += group.reported.get(key.dimension, 0)
            open_ += group.open(key.dimension)
            s, h = group.books(i)
            spent += s
            held += h
        return reported, open_, spent, held

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        with self._lock:
            outcome, group = self._settle(rid, mode, actual)
            if group is not None:
                self._maybe_report(group)
            return outcome

    def _settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None
    ) -> tuple[SettleOutcome, _Group | None]:
        """The reference settle on the local books; the group when something changed."""
        hold = self._holds.get(rid)
        if hold is None:
            return SettleOutcome(SettleStatus.UNKNOWN), None
        gid, held_amounts, created, expires, charge, state, charged, _ = hold
        group = self._group_list[gid]
        n = len(group.keys)
        if state != _HELD:
            assert charged is not None
            return SettleOutcome(SettleStatus.SETTLED, _as_map(group, charged)), None
        lane = group.single
        if type(held_amounts) is int and lane is not None and not group.extras:
            # One dimension, one amount on every line: the lane's books are every line's.
            if mode is SettleMode.COMMIT:
                cost = held_amounts if not actual else actual.get(lane.dim, held_amounts)
            else:
                cost = held_amounts if mode is SettleMode.EXPIRE_CHARGE else 0
            if cost <= held_amounts:  # an overrun blocks lines: the general way below
                lane.held -= held_amounts
                lane.spent += cost
                code = _MODE_CODE[mode]
                now = self.clock.now_ms()
                self._holds[rid] = (gid, held_amounts, created, expires, charge, code, cost, now)
                self._log.append((now, code, rid, gid, cost))
                return _new(SettleOutcome, (_S_OK, dict.fromkeys(group.keys, cost))), group
        amounts = _expand(held_amounts, n)
        if mode is SettleMode.COMMIT:
            actual = actual or {}
            costs = tuple([actual.get(d, a) for d, a in zip(group.dims, amounts, strict=True)])
        elif mode is SettleMode.EXPIRE_CHARGE:
            costs = amounts
        else:
            costs = (0,) * n
        touched = overrun = False
        for ln in group.lanes:  # lane books take the least; extras take the rest
            least_held = min(amounts[i] for i in ln.index)
            least_cost = min(costs[i] for i in ln.index)
            ln.held -= least_held
            ln.spent += least_cost
            for i in ln.index:
                if amounts[i] != least_held:
                    group.xheld[i] -= amounts[i] - least_held
                    touched = True
                if costs[i] != least_cost:
                    group.xspent[i] += costs[i] - least_cost
                    touched = True
                if costs[i] > amounts[i]:
                    overrun = touched = True
                    group.blocked[i] = group.blocked[i] or "overrun"
        if touched:
            group.rooms()
        code = _MODE_CODE[mode]
        now = self.clock.now_ms()
        compact = _compact(costs)
        self._holds[rid] = (gid, held_amounts, created, expires, charge, code, compact, now)
        self._log.append((now, code, rid, gid, compact))
        status = SettleStatus.OVERRUN if overrun else SettleStatus.OK
        return SettleOutcome(status, dict(zip(group.keys, costs, strict=True))), group

    def extend(self, rid: str, ttl_ms: int) -> bool:
        with self._lock:
            hold = self._holds.get(rid)
            if hold is None or hold[5] != _HELD:
                return False
            gid, amounts, created, _, charge, state, charged, settled = hold
            expires = self.clock.now_ms() + ttl_ms
            self._holds[rid] = (gid, amounts, created, expires, charge, state, charged, settled)
            group = self._group_list[gid]
            if ttl_ms > group.longest_ttl_ms:
                group.longest_ttl_ms = ttl_ms
                self._renew_gate(group)
            self._keep_alive(group)
            return True

    def reap(self, limit: int = 200) -> int:
        with self._lock:
            for group in self._group_list:
                self._keep_alive(group)
            now = self.clock.now_ms()
            due = sorted(
                (h[3], rid, h[4]) for rid, h in self._holds.items() if h[5] == _HELD and h[3] <= now
            )[:limit]
            done = 0
            for _, rid, charge in due:
                mode = SettleMode.EXPIRE_CHARGE if charge else SettleMode.EXPIRE
                if self._settle(rid, mode, None)[1] is not None:
                    done += 1
            for group in self._group_list:
                self._maybe_report(group)
        return done + self.base.reap(limit)

    def tick(self) -> None:
        """Return the leases of groups idle for ``idle_ms`` (call it from a timer)."""
        with self._lock:
            now = self.clock.now_ms()
            for group in self._group_list:
                if now - group.last_used_ms >= self.idle_ms and not group.any_held():
                    self._report(group)

    def stranded(self) -> dict[str, int]:
        """Leased but unused capacity per dimension: budget others cannot use right now."""
        with self._lock:
            out: dict[str, int] = {}
            for group in self._group_list:
                usage = self._usage(group)
                for lane in group.lanes:
                    used = max(sum(usage[i]) for i in lane.index)
                    free = max(0, lane.capacity - max(used, group.reported.get(lane.dim, 0)))
                    out[lane.dim] = out.get(lane.dim, 0) + free
            return out

    # -- the fast path -------------------------------------------------------------------
    def chain(
        self,
        lines: Sequence[LineRequest],
        *,
        ttl_s: float = DEFAULT_TTL_S,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        currency: str = "USD",
    ) -> LocalChain:
        """
        A handle on one fixed chain of one dimension, for ``reserve(amount)`` /
        ``commit(rid, actual)`` at local speed. ``lines`` gives the keys, limits and window
        ends; their amounts are ignored (each call gives its own). Validated once, here.
        """
        return LocalChain(self, lines, ttl_s=ttl_s, on_expiry=on_expiry, currency=currency)

    # -- inspection and administration -------------------------------------------------
    def lines(self, scope_prefix: str = "") -> list[LineState]:
        shared = self.base.lines(scope_prefix)
        with self._lock:
            out = []
            for line in shared:
                reported, open_, spent, held = self._ours(line.key)
                out.append(
                    LineState(
                        line.key,
                        line.limit,
                        line.spent - reported + spent,
                        line.held - open_ + held,
                        line.overrun,
                        line.blocked,
                    )
                )
            return out

    def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        with self._lock:
            groups = self._group_list
            return [
                self._record(rid, h)
                for rid, h in self._holds.items()
                if h[5] == _HELD
                and any(k.scope.startswith(scope_prefix) for k in groups[h[0]].keys)
            ]

    def hold(self, rid: str) -> HoldRecord | None:
        with self._lock:
            h = self._holds.get(rid)
            return None if h is None else self._record(rid, h)

    def _record(self, rid: str, h: _Hold) -> HoldRecord:
        gid, amounts, created, expires, charge, state, charged, settled = h
        group = self._group_list[gid]
        return HoldRecord(
            rid,
            _STATES[state],
            _as_map(group, amounts),
            {} if charged is None else _as_map(group, charged),
            created,
            expires,
            OnExpiry.CHARGE if charge else OnExpiry.RELEASE,
            settled,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        start = max(0, after_seq)
        with self._lock:
            groups = self._group_list
            return [
                Event(start + i + 1, ts, _KINDS[kind], rid, _as_map(groups[gid], values))
                for i, (ts, kind, rid, gid, values) in enumerate(self._log[start : start + limit])
            ]

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        self.base.set_limit(key, limit)
        with self._lock:
            if limit is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = limit
            for group, _ in self._by_key.get(key, ()):
                group.dirty = True
                group.regate()

    def block(self, key: LineKey, reason: str | None) -> None:
        self.base.block(key, reason)
        with self._lock:
            if reason is None:
                self._blocked.pop(key, None)
            else:
                self._blocked[key] = reason
            for group, i in self._by_key.get(key, ()):
                group.blocked[i] = reason
                group.rooms()

    def purge(self, settled_before_ms: int) -> int:
        with self._lock:
            old = [
                rid
                for rid, h in self._holds.items()
                if h[7] is not None and h[7] < settled_before_ms
            ]
            for rid in old:
                del self._holds[rid]
        self.base.purge(settled_before_ms)
        return len(old)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        """Report every group (holds still in flight are charged in full) and return leases."""
        with self._lock:
            for group in self._group_list:
                self._report(group, charge_held=True)
        if self.own_base:
            self.base.close()


def _as_map(group: _Group, values: _Amounts) -> dict[LineKey, int]:
    return dict(zip(group.keys, _expand(values, len(group.keys)), strict=True))


def _denied(denial: Denial) -> ReserveOutcome:
    return ReserveOutcome(ReserveStatus.DENIED, denial=denial)


class LocalChain:
    """
    One fixed chain on a ``SlicedStorage`` node, served by the fast local path.

        node = SlicedStorage(make_storage("redis://…"))
        chain = node.chain(lines)                 # keys, limits, window ends: checked once
        rid = chain.reserve(7)                    # the same amount on every line
        chain.commit(rid, 5)                      # the actual; omitted = charged in full

    Semantics are the ``Ledger`` facade's on the same node (the same holds, books, event
    log, denials, idempotency, expiry and reports; ``Ledger(node)`` sees them), without
    per-call ``LineRequest`` objects or chain validation. Amounts, actuals and caller rids
    are still checked on every call: a bad one is a ``ConfigurationError`` and writes
    nothing. ``commit`` and ``release`` return the ``SettleStatus`` only; the charge per
    line is ``actual`` on every line (see ``node.hold(rid)``).

    The chain must have one dimension (a cost chain, a token chain): one amount per call.
    Every hold uses the TTL and expiry policy given to ``node.chain``.

    Speed: the node's lock, dict of holds, log and clock are bound on the handle; a grant
    is one test of ``lane.room`` plus the gates the general path would check, all
    precomputed; ``reserve`` and ``try_reserve`` each carry the fast path inline (a shared
    helper would cost a call per hold). Whatever the fast path does not cover goes to the
    node's general path under the same lock.
    """

    __slots__ = (
        "_charge",
        "_dim",
        "_group",
        "_holds",
        "_lane",
        "_limits",
        "_lock",
        "_log",
        "_low",
        "_n",
        "_node",
        "_now",
        "_on_expiry",
        "_requests",
        "_ttl_ms",
        "currency",
        "url",
    )

    def __init__(
        self,
        node: SlicedStorage,
        lines: Sequence[LineRequest],
        *,
        ttl_s: float = DEFAULT_TTL_S,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        currency: str = "USD",
    ) -> None:
        if not lines:
            raise ConfigurationError("a local chain needs at least one line")
        self._ttl_ms = check_reserve("chain", lines, ttl_s)
        dims = {line.key.dimension for line in lines}
        if len(dims) != 1:
            raise ConfigurationError(
                f"a local chain holds one dimension per call, got {sorted(dims)}; "
                "use one chain per dimension, or Ledger(node) for mixed chains"
            )
        self._node = node
        self._dim = dims.pop()
        self._limits = tuple(line.limit for line in lines)
        self._requests = tuple(lines)
        self._n = len(lines)
        self._on_expiry = on_expiry
        self._charge = on_expiry is _CHARGE
        self._lock = node._lock
        self._holds = node._holds
        self._log = node._log
        self._now = node.clock.now_ms
        self.currency = currency
        self.url = f"sliced+{getattr(node.base, 'scheme', 'custom')}://"
        with node._lock:
            self._group = node._group(tuple(line.key for line in lines), self._limits)
        lane = self._group.single
        assert lane is not None
        self._lane = lane
        self._low = node.refill_fraction * node.calls_per_slice

    def reserve(self, amount: int, *, rid: str | None = None) -> str:
        """Hold ``amount`` on every line, or raise the ``BudgetExceeded`` of the refusing line."""
        if type(amount) is not int or not (0 <= amount <= _MAX_UNITS):
            check_units(amount, what="amount")
        if rid is None:
            rid = new_rid()
        elif type(rid) is not str or not rid or len(rid) > _MAX_RID:
            check_rid(rid)
        group = self._group
        lane = self._lane
        with self._lock:
            now = self._now()
            used = lane.spent + lane.held
            # The general path would do more than hold if a limit changed, caps are stale,
            # extras exist or a lease needs extending (fast_until_ms), if this TTL is the
            # longest yet, if the rid is a retry, or if the amount does not fit.
            if (
                now < group.fast_until_ms
                and used + amount <= lane.room
                and group.limits is self._limits
                and self._ttl_ms <= group.longest_ttl_ms
                and rid not in self._holds
            ):
                lane.held += amount
                group.last_used_ms = now
                gid = group.gid
                self._holds[rid] = (
                    gid, amount, now, now + self._ttl_ms, self._charge, _HELD, None, None
                )  # fmt: skip
                self._log.append((now, 0, rid, gid, amount))
                if lane.capacity - used - amount < self._low * amount:
                    self._refill(amount)  # as the general path does after a grant
                return rid
            outcome = self._general(amount, rid)
        if outcome.denial is not None:
            raise denial_error(outcome.denial, self._requests, self.currency)
        return rid

    def try_reserve(self, amount: int, *, rid: str | None = None) -> tuple[str, ReserveOutcome]:
        """Hold ``amount`` on every line; a denial is an outcome, not an error."""
        if type(amount) is not int or not (0 <= amount <= _MAX_UNITS):
            check_units(amount, what="amount")
        if rid is None:
            rid = new_rid()
        elif type(rid) is not str or not rid or len(rid) > _MAX_RID:
            check_rid(rid)
        group = self._group
        lane = self._lane
        with self._lock:
            now = self._now()
            used = lane.spent + lane.held
            if (  # the same fast path as ``reserve``
                now < group.fast_until_ms
                and used + amount <= lane.room
                and group.limits is self._limits
                and self._ttl_ms <= group.longest_ttl_ms
                and rid not in self._holds
            ):
                lane.held += amount
                group.last_used_ms = now
                gid = group.gid
                expires = now + self._ttl_ms
                self._holds[rid] = (gid, amount, now, expires, self._charge, _HELD, None, None)
                self._log.append((now, 0, rid, gid, amount))
                if lane.capacity - used - amount < self._low * amount:
                    self._refill(amount)
                return rid, _new(ReserveOutcome, (_OK, expires, None, None))
            return rid, self._general(amount, rid)

    def _lines(self, amount: int) -> list[LineRequest]:
        return [LineRequest(r.key, r.limit, amount, r.window_end_ms) for r in self._requests]

    def _refill(self, amount: int) -> None:
        """Top up early (under the lock), as ``SlicedStorage._reserve`` does after a grant."""
        node = self._node
        try:
            node._refill_early(self._group, self._lines(amount))
        except node.base_exceptions as exc:
            _reraise(self.url, exc)

    def _general(self, amount: int, rid: str) -> ReserveOutcome:
        """Everything the fast path does not cover (under the lock)."""
        node = self._node
        existing = self._holds.get(rid)
        if existing is not None:  # a retry: DUP or SETTLED, nothing changes
            status = ReserveStatus.DUP if existing[5] == _HELD else ReserveStatus.SETTLED
            return ReserveOutcome(status, existing[3])
        # Given this chain's own limits tuple, so that the identity test of the fast path
        # holds again on the next call.
        amounts = (amount,) * self._n
        try:
            return node._reserve(
                self._group,
                rid,
                self._lines(amount),
                self._limits,
                amounts,
                self._ttl_ms,
                self._on_expiry,
                False,
            )
        except node.base_exceptions as exc:
            _reraise(self.url, exc)

    def commit(self, rid: str, actual: int | None = None) -> SettleStatus:
        """Charge ``actual`` on every line (None: the whole hold) and settle, at most once."""
        if type(rid) is not str or not rid or len(rid) > _MAX_RID:
            check_rid(rid)
        if actual is not None and (type(actual) is not int or not (0 <= actual <= _MAX_UNITS)):
            check_units(actual, what=f"actual {self._dim}")
        group = self._group
        with self._lock:
            hold = self._holds.get(rid)
            # Fast: a uniform hold of this chain, still held, charged at most its amount
            # (an overrun blocks lines: the general path records it), and no extras.
            if hold is not None and hold[0] == group.gid and hold[5] == _HELD:
                amount = hold[1]
                if isinstance(amount, int) and not group.extras:
                    cost = amount if actual is None else actual
                    if cost <= amount:
                        lane = self._lane
                        now = self._now()
                        lane.held -= amount
                        lane.spent += cost
                        gid = group.gid
                        self._holds[rid] = (gid, amount, hold[2], hold[3], hold[4], 1, cost, now)
                        self._log.append((now, _COMMITTED, rid, gid, cost))
                        if not lane.held and (
                            now >= group.report_due_ms or now < group.direct_until_ms
                        ):
                            self._report()  # as the general path does after a settle
                        return _S_OK
            return self._settle(rid, SettleMode.COMMIT, actual)

    def release(self, rid: str) -> SettleStatus:
        """Charge nothing and settle, at most once."""
        check_rid(rid)
        with self._lock:
            return self._settle(rid, SettleMode.RELEASE, None)

    def _report(self) -> None:
        node = self._node
        try:
            node._maybe_report(self._group)
        except node.base_exceptions as exc:
            _reraise(self.url, exc)

    def _settle(self, rid: str, mode: SettleMode, actual: int | None) -> SettleStatus:
        node = self._node
        try:
            return node.settle(rid, mode, None if actual is None else {self._dim: actual}).status
        except node.base_exceptions as exc:
            _reraise(self.url, exc)
