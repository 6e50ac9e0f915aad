"""
Slices in the contract suite: a ``SlicedStorage`` (one node) over memory, SQLite and Redis.

With one node, the sliced ledger must be indistinguishable from a direct one through the
facade: same grants, same denials (same line, same books), same books and event log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from execbudget.clock import Clock
from execbudget.ledger import MemoryStorage, SQLiteStorage
from execbudget.ledger.slices import SlicedStorage

from ._redis_backend import make_redis


@contextmanager
def make_sliced_memory(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    storage = SlicedStorage(MemoryStorage(clock=clock), clock=clock, calls_per_slice=4)
    yield storage
    storage.close()


@contextmanager
def make_sliced_sqlite(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    base = SQLiteStorage(tmp_path / "ledger.db", clock=clock)
    storage = SlicedStorage(base, clock=clock, calls_per_slice=4)
    yield storage
    storage.close()


@contextmanager
def make_sliced_redis(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    with make_redis(clock, tmp_path) as base:
        storage = SlicedStorage(base, clock=clock, calls_per_slice=4, own_base=False)
        yield storage
        storage.close()
