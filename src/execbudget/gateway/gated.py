"""
A ledger storage that lets at most N operations run at once per process; the rest queue.

A burst of requests must wait for the ledger, not fail on it: redis-py's asyncio pool
refuses past its ``max_connections`` (100) with ``MaxConnectionsError``, which the ledger
reports as ``LedgerUnavailable``, and a refused *settlement* strands its hold until the
TTL. Each request makes a handful of ledger operations (hold, room reads, settle), so the
gateway bounds them below the pool's size (``GatewayConfig.ledger_concurrency``).

The wrapper passes on ``read_lines`` (the exact read of named lines) when the inner store
has it: without it ``AsyncLedger.read_lines`` falls back to listing each scope's lines,
which on Redis is a ``SCAN`` of the whole keyspace on every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..ledger import (
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

__all__ = ["GatedStorage"]

_ReadLines = Callable[[Sequence[LineKey]], Awaitable[list[LineState | None]]]


class GatedStorage:
    """An ``AsyncStorage`` around another, at most ``limit`` operations in flight."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)
        self.scheme: str = inner.scheme
        self.base_exceptions: tuple[type[BaseException], ...] = inner.base_exceptions
        # Looked up with getattr by the ledger: present only if the inner store has it
        # (every backend does; a ThreadedStorage only if its sync store does).
        self.read_lines: _ReadLines | None = (
            self._read_lines if getattr(inner, "read_lines", None) is not None else None
        )

    @property
    def inner(self) -> Any:
        return self._inner

    async def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        async with self._slots:
            outcome: ReserveOutcome = await self._inner.reserve(
                rid, lines, ttl_ms, on_expiry=on_expiry, charge_now=charge_now
            )
            return outcome

    async def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        async with self._slots:
            outcome: SettleOutcome = await self._inner.settle(rid, mode, actual)
            return outcome

    async def extend(self, rid: str, ttl_ms: int) -> bool:
        async with self._slots:
            return bool(await self._inner.extend(rid, ttl_ms))

    async def reap(self, limit: int = 200) -> int:
        async with self._slots:
            return int(await self._inner.reap(limit))

    async def lines(self, scope_prefix: str = "") -> list[LineState]:
        async with self._slots:
            return list(await self._inner.lines(scope_prefix))

    async def _read_lines(self, keys: Sequence[LineKey]) -> list[LineState | None]:
        async with self._slots:
            return list(await self._inner.read_lines(keys))

    async def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        async with self._slots:
            return list(await self._inner.holds(scope_prefix))

    async def hold(self, rid: str) -> HoldRecord | None:
        async with self._slots:
            record: HoldRecord | None = await self._inner.hold(rid)
            return record

    async def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        async with self._slots:
            return list(await self._inner.events(after_seq, limit))

    async def set_limit(self, key: LineKey, limit: int | None) -> None:
        async with self._slots:
            await self._inner.set_limit(key, limit)

    async def block(self, key: LineKey, reason: str | None) -> None:
        async with self._slots:
            await self._inner.block(key, reason)

    async def purge(self, settled_before_ms: int) -> int:
        async with self._slots:
            return int(await self._inner.purge(settled_before_ms))

    async def now_ms(self) -> int:
        async with self._slots:
            return int(await self._inner.now_ms())

    async def aclose(self) -> None:
        await self._inner.aclose()
