"""
The budget ledger: reserve → commit | release | expire, all-or-nothing over a chain of lines.

A line is one (scope, window, dimension) with a limit and integer ``spent`` and ``held``.
``reserve`` checks ``spent + held + amount ≤ limit`` on every line of the chain and holds
on all of them or on none; ``commit`` charges the actual usage and frees the rest. Each
reservation settles at most once and every operation is idempotent by its ``rid``.
"""

from __future__ import annotations

from ._books import BookMismatch, reconcile
from ._ledger import DEFAULT_TTL_S, ThreadedStorage, denial_error, new_rid
from ._ledger_async import AsyncLedger
from ._ledger_sync import Ledger
from ._memory import MemoryStorage
from ._registry import DEFAULT_URL, make_storage
from ._sqlite import SQLiteStorage
from ._storage import AsyncStorage, Storage
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

__all__ = [
    "DEFAULT_TTL_S",
    "DEFAULT_URL",
    "AsyncLedger",
    "AsyncStorage",
    "BookMismatch",
    "Denial",
    "Event",
    "HoldRecord",
    "HoldState",
    "Ledger",
    "LineKey",
    "LineRequest",
    "LineState",
    "MemoryStorage",
    "OnExpiry",
    "ReserveOutcome",
    "ReserveStatus",
    "SQLiteStorage",
    "SettleMode",
    "SettleOutcome",
    "SettleStatus",
    "Storage",
    "ThreadedStorage",
    "denial_error",
    "make_storage",
    "new_rid",
    "reconcile",
]
