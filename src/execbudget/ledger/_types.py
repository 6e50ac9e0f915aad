"""
Value objects the ledger speaks in. Every backend takes and returns exactly these.

A **line** is one (scope, window, dimension) with a limit and integer ``spent``/``held``.
A **reservation** holds an amount on each line of a chain, all or nothing, until it is
committed (actual usage charged), released, or expired by the reaper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple

TOMBSTONE_RETENTION_MS: Final = 7 * 24 * 3600 * 1000


class ReserveStatus(StrEnum):
    OK = "ok"  # granted now
    DUP = "dup"  # this rid already holds: a retried reserve, nothing changed
    SETTLED = "settled"  # this rid was already settled: a late retry, nothing changed
    DENIED = "denied"  # a line could not grant: nothing changed anywhere


class SettleStatus(StrEnum):
    OK = "ok"
    OVERRUN = "overrun"  # charged more than was held on some line: recorded and blocking
    SETTLED = "settled"  # already settled earlier: nothing changed (charged = the earlier charge)
    UNKNOWN = "unknown"  # no such reservation (never made, or its tombstone was purged)


class SettleMode(StrEnum):
    COMMIT = "commit"  # charge the actual usage
    RELEASE = "release"  # charge nothing
    EXPIRE = "expire"  # reaper: the deadline passed; charge nothing
    EXPIRE_CHARGE = "expire_charge"  # reaper: the deadline passed; charge the whole hold


class OnExpiry(StrEnum):
    RELEASE = "release"  # ordinary calls: the worker aborts at its deadline
    CHARGE = "charge"  # slices and hard scopes: the holder may have spent all of it


class HoldState(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    EXPIRED_CHARGE = "expire_charge"


class LineKey(NamedTuple):
    """(scope, window, dimension): a tuple, so hashing it on every hold costs little."""

    scope: str
    window: str
    dimension: str

    def __str__(self) -> str:
        return f"{self.scope}/{self.window}/{self.dimension}"


class LineRequest(NamedTuple):
    """One line of a reserve: hold ``amount`` on ``key``, whose limit is ``limit``."""

    key: LineKey
    limit: int
    amount: int
    #: When the window ends (epoch ms), so stores with key expiry can drop old lines.
    window_end_ms: int | None = None


class Denial(NamedTuple):
    """The first line of a chain that refused, with its books at that moment."""

    level: int  # position of the refusing line in the chain, 0 = outermost
    key: LineKey
    limit: int
    spent: int
    held: int
    requested: int
    reason: str = "limit"  # "limit", "overrun" or "killed" (the line is blocked)


class ReserveOutcome(NamedTuple):
    status: ReserveStatus
    expires_at_ms: int | None = None
    denial: Denial | None = None
    #: The chain's lines as a granted reserve left them, in the order asked, when the
    #: backend reads them anyway (Redis): a caller that shows the room left then needs no
    #: second read. ``None`` when the backend does not say.
    books: Sequence[LineState] | None = None


class SettleOutcome(NamedTuple):
    status: SettleStatus
    #: What was charged per line key (empty for UNKNOWN).
    charged: Mapping[LineKey, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LineState:
    key: LineKey
    limit: int
    spent: int
    held: int
    overrun: int = 0
    blocked: str | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.spent - self.held)


@dataclass(frozen=True, slots=True)
class HoldRecord:
    rid: str
    state: HoldState
    amounts: Mapping[LineKey, int]
    charged: Mapping[LineKey, int]
    created_ms: int
    expires_at_ms: int
    on_expiry: OnExpiry
    settled_ms: int | None = None


class Event(NamedTuple):
    """One entry of the append-only event log (the audit and billing feed)."""

    seq: int
    ts_ms: int
    kind: str  # reserve, charge, commit, release, expire, expire_charge
    rid: str
    #: Per line: the amount held (reserve) or charged (every other kind).
    amounts: Mapping[LineKey, int]
