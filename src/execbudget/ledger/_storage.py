"""
The storage contract every ledger backend keeps, sync and async.

Each operation is one atomic step in the store (a transaction, a Lua script, a SQL
function): a reserve checks every line first and writes only when all grant. Backends
never raise on a denial; they return it. They raise their driver's errors, listed in
``base_exceptions``, which the ledger facade turns into ``LedgerUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from ._types import (
    Event,
    HoldRecord,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    SettleMode,
    SettleOutcome,
)


@runtime_checkable
class Storage(Protocol):
    """A synchronous ledger backend."""

    scheme: ClassVar[str]
    base_exceptions: ClassVar[tuple[type[BaseException], ...]]

    def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        """
        Hold every line's amount, or nothing. ``charge_now`` spends at once (a step, a
        retry): check and charge in one operation, leaving a settled tombstone.
        """
        ...

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        """
        Settle a hold at most once. For COMMIT, ``actual`` maps a dimension to the amount
        to charge on every line of that dimension; a dimension it omits is charged in
        full (the conservative reading).
        """
        ...

    def extend(self, rid: str, ttl_ms: int) -> bool:
        """Push a held reservation's deadline to now + ttl; False if it is not held."""
        ...

    def reap(self, limit: int = 200) -> int:
        """Settle up to ``limit`` holds past their deadline by their ``on_expiry``."""
        ...

    def lines(self, scope_prefix: str = "") -> list[LineState]: ...

    def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        """Holds still in state HELD whose lines include a scope with this prefix."""
        ...

    def hold(self, rid: str) -> HoldRecord | None: ...

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        """An operator's limit for a line, which wins over the policy's; None clears it."""
        ...

    def block(self, key: LineKey, reason: str | None) -> None:
        """Block a line (``overrun``, ``killed``) or unblock it with ``None``."""
        ...

    def purge(self, settled_before_ms: int) -> int:
        """Delete tombstones settled before the given time; late retries then get UNKNOWN."""
        ...

    def now_ms(self) -> int:
        """The store's clock, the one deadlines are measured on."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStorage(Protocol):
    """The asynchronous twin of ``Storage``: the same methods, awaited."""

    scheme: ClassVar[str]
    base_exceptions: ClassVar[tuple[type[BaseException], ...]]

    async def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome: ...

    async def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome: ...

    async def extend(self, rid: str, ttl_ms: int) -> bool: ...

    async def reap(self, limit: int = 200) -> int: ...

    async def lines(self, scope_prefix: str = "") -> list[LineState]: ...

    async def holds(self, scope_prefix: str = "") -> list[HoldRecord]: ...

    async def hold(self, rid: str) -> HoldRecord | None: ...

    async def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    async def set_limit(self, key: LineKey, limit: int | None) -> None: ...

    async def block(self, key: LineKey, reason: str | None) -> None: ...

    async def purge(self, settled_before_ms: int) -> int: ...

    async def now_ms(self) -> int: ...

    async def aclose(self) -> None: ...
