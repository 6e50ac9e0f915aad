"""
Slices (escrow leases): serve holds on hot lines locally, from capacity leased from a
shared ledger, with zero overshoot.

A node wraps the shared storage (Redis, PostgreSQL, SQLite, …) in a ``SlicedStorage``.
For each distinct chain (a *group*: the tuple of its line keys) the node holds one or more
**leases**: ordinary reservations on the shared storage, on the same lines, with
``on_expiry=CHARGE`` (a dead node may have spent any part of them). Calls then reserve and
commit in a local ``MemoryStorage`` (the reference semantics, reused) whose lines are
capped at what the leases granted, so the node can never hand out more than it holds.

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
from typing import ClassVar

from ..clock import SYSTEM_CLOCK, Clock
from ._memory import MemoryStorage
from ._storage import Storage
from ._types import (
    Denial,
    Event,
    HoldRecord,
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

_SEP = "\x1f"  # joins a dimension and a group id in the local book's line keys


@dataclass(slots=True)
class _Lease:
    rid: str
    amounts: dict[str, int]  # per dimension, on every line of that dimension
    expires_ms: int


@dataclass(slots=True)
class _Group:
    gid: int
    keys: tuple[LineKey, ...]
    local: tuple[LineKey, ...]
    dims: tuple[str, ...]
    leases: list[_Lease] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # charged via closed leases
    limits: dict[LineKey, int] = field(default_factory=dict)  # local caps as last set
    policy: dict[LineKey, int] = field(default_factory=dict)  # policy limit per line
    direct_until_ms: int = 0
    last_report_ms: int = 0
    last_used_ms: int = 0
    longest_ttl_ms: int = 0
    cap: dict[str, int] = field(default_factory=dict)  # reported + open, per dimension
    dirty: bool = True  # local caps must be set again

    def open(self, dim: str) -> int:
        return sum(lease.amounts.get(dim, 0) for lease in self.leases)

    def capacity(self, dim: str) -> int:
        return self.cap.get(dim, 0)

    def recount(self) -> None:
        """Capacity changed (a lease came or went): cache it and mark the caps stale."""
        self.cap = {d: self.reported.get(d, 0) + self.open(d) for d in set(self.dims)}
        self.dirty = True


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
        self.local = MemoryStorage(clock=clock)
        self._lock = threading.RLock()
        self._groups: dict[tuple[LineKey, ...], _Group] = {}
        self._by_local: dict[LineKey, tuple[_Group, LineKey]] = {}
        self._rid_group: dict[str, _Group] = {}
        self._overrides: dict[LineKey, int] = {}
        self._blocked: dict[LineKey, str] = {}
        self._seq = itertools.count(1)
        self.base_calls = 0  # leases, top-ups, reports: what the shared store sees

    # -- groups and keys ---------------------------------------------------------------
    def _group(self, lines: Sequence[LineRequest]) -> _Group:
        keys = tuple(r.key for r in lines)
        group = self._groups.get(keys)
        if group is None:
            gid = len(self._groups) + 1
            local = tuple(LineKey(k.scope, k.window, f"{k.dimension}{_SEP}{gid}") for k in keys)
            group = _Group(gid, keys, local, tuple(k.dimension for k in keys))
            group.last_report_ms = self.clock.now_ms()
            self._groups[keys] = group
            for key, lk in zip(keys, local, strict=True):
                self._by_local[lk] = (group, key)
                if key in self._blocked:
                    self.local.block(lk, self._blocked[key])
        return group

    def _unmap(self, amounts: Mapping[LineKey, int]) -> dict[LineKey, int]:
        return {self._by_local[k][1]: v for k, v in amounts.items()}

    def _usage(self, group: _Group) -> list[tuple[int, int]]:
        """(spent, held) of each local line of the group."""
        book = self.local._book.lines  # same package: the reference book, read in place
        out = []
        for lk in group.local:
            line = book.get(lk)
            out.append((0, 0) if line is None else (line.spent, line.held))
        return out

    def _set_caps(self, group: _Group) -> None:
        group.dirty = False
        for key, lk in zip(group.keys, group.local, strict=True):
            limit = self._overrides.get(key, group.policy.get(key, 0))
            cap = min(group.capacity(key.dimension), limit)
            if group.limits.get(lk) != cap:
                self.local.set_limit(lk, cap)
                group.limits[lk] = cap

    # -- leases ------------------------------------------------------------------------
    def _lease(
        self, group: _Group, lines: Sequence[LineRequest], amounts: Mapping[str, int]
    ) -> ReserveOutcome:
        """Lease ``amounts`` (per dimension) on the group's lines from the shared store."""
        rid = f"slice:{self.node}:{group.gid}:{next(self._seq)}"
        ttl = max(self.lease_ttl_ms, group.longest_ttl_ms + self.lease_margin_ms)
        requests = [
            LineRequest(r.key, r.limit, amounts.get(r.key.dimension, 0), r.window_end_ms)
            for r in lines
        ]
        self.base_calls += 1
        outcome = self.base.reserve(rid, requests, ttl, on_expiry=OnExpiry.CHARGE)
        if outcome.status is ReserveStatus.OK:
            group.leases.append(_Lease(rid, dict(amounts), self.clock.now_ms() + ttl))
            group.recount()
            self._set_caps(group)
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

    def _shortfall(self, group: _Group, lines: Sequence[LineRequest]) -> dict[str, int]:
        short: dict[str, int] = {}
        for req, (spent, held) in zip(lines, self._usage(group), strict=True):
            dim = req.key.dimension
            need = spent + held + req.amount - group.capacity(dim)
            if need > short.get(dim, 0):
                short[dim] = need
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

    def _report(self, group: _Group, *, charge_held: bool = False) -> None:
        """Commit the group's leases with what was spent locally; free the rest."""
        if not group.leases:
            return
        usage = self._usage(group)
        spent: dict[str, int] = {}
        for dim, (s, h) in zip(group.dims, usage, strict=True):
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
        group.recount()
        group.last_report_ms = self.clock.now_ms()
        self._set_caps(group)

    def _maybe_report(self, group: _Group) -> None:
        if any(h for _, h in self._usage(group)):
            return
        now = self.clock.now_ms()
        # Near exhaustion (direct mode) every unused unit must go back at once, or it is
        # stranded while other nodes are being denied.
        if now < group.direct_until_ms or now - group.last_report_ms >= self.report_every_ms:
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
        with self._lock:
            group = self._group(lines)
            local = [
                LineRequest(lk, r.limit, r.amount, r.window_end_ms)
                for lk, r in zip(group.local, lines, strict=True)
            ]
            if rid in self._rid_group:  # a retry: the local book answers DUP or SETTLED
                return self.local.reserve(rid, local, ttl_ms, on_expiry=on_expiry)
            now = self.clock.now_ms()
            group.last_used_ms = now
            policy = group.policy
            for req in lines:
                if policy.get(req.key) != req.limit:
                    policy[req.key] = req.limit
                    group.dirty = True
            if ttl_ms > group.longest_ttl_ms:
                group.longest_ttl_ms = ttl_ms
            if group.dirty:
                self._set_caps(group)
            self._keep_alive(group)
            outcome = self.local.reserve(
                rid, local, ttl_ms, on_expiry=on_expiry, charge_now=charge_now
            )
            if outcome.denial is not None:
                if not self._capacity_bound(group, outcome.denial):
                    return ReserveOutcome(
                        ReserveStatus.DENIED, denial=self._logical(outcome.denial)
                    )
                # Lease the shortfall (plus a slice when there is room), then try again: the
                # shared store has just checked exactly what a direct hold would.
                lease = self._top_up(group, lines, self._shortfall(group, lines))
                if lease.denial is not None:
                    return ReserveOutcome(ReserveStatus.DENIED, denial=self._shared(lease.denial))
                outcome = self.local.reserve(
                    rid, local, ttl_ms, on_expiry=on_expiry, charge_now=charge_now
                )
                if outcome.denial is not None:  # blocked meanwhile, or a limit below the lease
                    return ReserveOutcome(
                        ReserveStatus.DENIED, denial=self._logical(outcome.denial)
                    )
            if outcome.status is ReserveStatus.OK:
                self._rid_group[rid] = group
                if charge_now:
                    self._maybe_report(group)
                else:
                    self._refill_early(group, lines)
            return outcome

    def _capacity_bound(self, group: _Group, denial: Denial) -> bool:
        """Was the local refusal only for lack of leased capacity (then lease more)?"""
        if denial.reason != "limit":
            return False
        key = group.keys[denial.level]
        limit = self._overrides.get(key, group.policy.get(key, 0))
        return group.capacity(key.dimension) < limit

    def _refill_early(self, group: _Group, lines: Sequence[LineRequest]) -> None:
        if not group.leases or self.clock.now_ms() < group.direct_until_ms:
            return
        book = self.local._book.lines
        cap = group.cap
        low = self.refill_fraction * self.calls_per_slice
        for lk, dim, req in zip(group.local, group.dims, lines, strict=True):
            line = book[lk]
            if cap[dim] - line.spent - line.held < low * req.amount:
                slice_all = {d: self.calls_per_slice * self._per_call(lines, d) for d in group.dims}
                outcome = self._lease(group, lines, slice_all)
                if outcome.status is not ReserveStatus.OK:
                    group.direct_until_ms = self.clock.now_ms() + self.direct_retry_ms
                return

    def _logical(self, denial: Denial) -> Denial:
        group, key = self._by_local[denial.key]
        limit = self._overrides.get(key, group.policy.get(key, denial.limit))
        spent, held = self._local_books(key)
        return Denial(denial.level, key, limit, spent, held, denial.requested, denial.reason)

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

    def _local_books(self, key: LineKey) -> tuple[int, int]:
        _, _, spent, held = self._ours(key)
        return spent, held

    def _ours(self, key: LineKey) -> tuple[int, int, int, int]:
        """This node's (reported, open lease, local spent, local held) on a shared line."""
        reported = open_ = spent = held = 0
        book = self.local._book.lines
        for group in self._groups.values():
            for k, lk in zip(group.keys, group.local, strict=True):
                if k != key:
                    continue
                reported += group.reported.get(k.dimension, 0)
                open_ += group.open(k.dimension)
                line = book.get(lk)
                if line is not None:
                    spent += line.spent
                    held += line.held
        return reported, open_, spent, held

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        with self._lock:
            group = self._rid_group.get(rid)
            if group is None:
                outcome = self.local.settle(rid, mode)
                return SettleOutcome(outcome.status, self._unmap(outcome.charged))
            mapped = None
            if actual is not None:
                mapped = {f"{d}{_SEP}{group.gid}": v for d, v in actual.items()}
            outcome = self.local.settle(rid, mode, mapped)
            if outcome.status in (SettleStatus.OK, SettleStatus.OVERRUN):
                self._maybe_report(group)
            return SettleOutcome(outcome.status, self._unmap(outcome.charged))

    def extend(self, rid: str, ttl_ms: int) -> bool:
        with self._lock:
            group = self._rid_group.get(rid)
            if group is None or not self.local.extend(rid, ttl_ms):
                return False
            group.longest_ttl_ms = max(group.longest_ttl_ms, ttl_ms)
            self._keep_alive(group)
            return True

    def reap(self, limit: int = 200) -> int:
        with self._lock:
            for group in self._groups.values():
                self._keep_alive(group)
            done = self.local.reap(limit)
            for group in self._groups.values():
                self._maybe_report(group)
        return done + self.base.reap(limit)

    def tick(self) -> None:
        """Return the leases of groups idle for ``idle_ms`` (call it from a timer)."""
        with self._lock:
            now = self.clock.now_ms()
            for group in self._groups.values():
                if now - group.last_used_ms >= self.idle_ms and not any(
                    h for _, h in self._usage(group)
                ):
                    self._report(group)

    def stranded(self) -> dict[str, int]:
        """Leased but unused capacity per dimension: budget others cannot use right now."""
        with self._lock:
            out: dict[str, int] = {}
            for group in self._groups.values():
                usage = self._usage(group)
                for dim in set(group.dims):
                    used = max(
                        s + h for d, (s, h) in zip(group.dims, usage, strict=True) if d == dim
                    )
                    free = max(0, group.capacity(dim) - max(used, group.reported.get(dim, 0)))
                    out[dim] = out.get(dim, 0) + free
            return out

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
            return [self._record(h) for h in self.local.holds(scope_prefix)]

    def hold(self, rid: str) -> HoldRecord | None:
        with self._lock:
            record = self.local.hold(rid)
            return None if record is None else self._record(record)

    def _record(self, h: HoldRecord) -> HoldRecord:
        return HoldRecord(
            h.rid,
            h.state,
            self._unmap(h.amounts),
            self._unmap(h.charged),
            h.created_ms,
            h.expires_at_ms,
            h.on_expiry,
            h.settled_ms,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._lock:
            return [
                Event(e.seq, e.ts_ms, e.kind, e.rid, self._unmap(e.amounts))
                for e in self.local.events(after_seq, limit)
            ]

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        self.base.set_limit(key, limit)
        with self._lock:
            if limit is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = limit
            for group in self._groups.values():
                if key in group.keys:
                    group.dirty = True

    def block(self, key: LineKey, reason: str | None) -> None:
        self.base.block(key, reason)
        with self._lock:
            if reason is None:
                self._blocked.pop(key, None)
            else:
                self._blocked[key] = reason
            for lk, (_, k) in self._by_local.items():
                if k == key:
                    self.local.block(lk, reason)

    def purge(self, settled_before_ms: int) -> int:
        with self._lock:
            done = self.local.purge(settled_before_ms)
            for rid in [r for r in self._rid_group if self.local.hold(r) is None]:
                del self._rid_group[rid]
        self.base.purge(settled_before_ms)
        return done

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        """Report every group (holds still in flight are charged in full) and return leases."""
        with self._lock:
            for group in self._groups.values():
                self._report(group, charge_held=True)
        if self.own_base:
            self.base.close()
