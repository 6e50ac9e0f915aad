"""
The backends the contract suite runs on. Each entry builds a fresh, isolated storage for
one test (its own file, key prefix or schema) given a clock, and cleans it up after.

To add a backend, add a ``Backend`` to ``BACKENDS``; every contract test then runs on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from execbudget.clock import Clock
from execbudget.ledger import AsyncLedger, MemoryStorage, SQLiteStorage

from ._pg_backend import make_postgres, make_postgres_async
from ._redis_backend import make_redis, make_redis_async
from ._sliced_backend import make_sliced_memory, make_sliced_redis, make_sliced_sqlite

T = TypeVar("T")

#: (clock, tmp_path) → context manager yielding a Storage (or an AsyncStorage)
StorageFactory = Callable[[Clock, Path], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Backend:
    name: str
    #: yields a sync ``Storage``
    make: StorageFactory
    #: yields a native ``AsyncStorage``; None serves the sync storage to asyncio in threads.
    #: It is entered inside the test's event loop thread.
    make_async: StorageFactory | None = None
    marks: tuple[pytest.MarkDecorator, ...] = ()


@contextmanager
def _memory(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    yield MemoryStorage(clock=clock)


@contextmanager
def _sqlite(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    storage = SQLiteStorage(tmp_path / "ledger.db", clock=clock)
    yield storage
    storage.close()


@contextmanager
def _sqlite_group_commit(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    storage = SQLiteStorage(tmp_path / "ledger.db", clock=clock, group_commit=True)
    yield storage
    storage.close()


BACKENDS: list[Backend] = [
    Backend("memory", _memory),
    Backend("sqlite", _sqlite),
    Backend("sqlite-group-commit", _sqlite_group_commit),
    Backend("redis", make_redis, make_redis_async, marks=(pytest.mark.redis,)),
    Backend("sliced-memory", make_sliced_memory),
    Backend("sliced-sqlite", make_sliced_sqlite),
    Backend("sliced-redis", make_sliced_redis, marks=(pytest.mark.redis,)),
    Backend("postgres", make_postgres, make_postgres_async, marks=(pytest.mark.postgres,)),
]


class LoopThread:
    """One event loop on a thread, so sync test code can drive an async ledger."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class SyncOverAsync:
    """
    Presents an ``AsyncLedger`` with ``Ledger``'s sync methods, so the one contract suite
    checks both faces without a second, hand-written copy of the tests.
    """

    def __init__(self, ledger: AsyncLedger, loop: LoopThread) -> None:
        self._ledger = ledger
        self._loop = loop
        self.storage = ledger.storage

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ledger, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run(attr(*args, **kwargs))

        return call
