"""
``Ledger`` and ``AsyncLedger``: the public face of every backend.

They validate input before it reaches a store (a negative, absurd or duplicated amount is
a ``ConfigurationError`` and writes nothing), turn every driver error into
``LedgerUnavailable`` at one choke point, and turn a denial into a typed
``BudgetExceeded``. The pure parts are shared; each method of the two classes is the same
three steps, check → call the store → interpret, differing only by ``await``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit, urlunsplit

from ..errors import BudgetExceeded, ConfigurationError, LedgerUnavailable
from ..units import DENIAL_TYPES, check_units, display
from ._storage import AsyncStorage, Storage
from ._types import (
    Denial,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
)

DEFAULT_TTL_S: Final = 300.0
_MAX_RID: Final = 200


# -- shared pure steps -----------------------------------------------------------------
_RID_PREFIX = ""
_RID_COUNTER = itertools.count()


def _reseed() -> None:
    """A fresh random prefix per process, so forked children never reuse an id."""
    global _RID_PREFIX, _RID_COUNTER
    _RID_PREFIX = f"{secrets.token_hex(8)}-"
    _RID_COUNTER = itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_rid() -> str:
    """A unique reservation id: 64 random bits per process and a counter (cheap per hold)."""
    return f"{_RID_PREFIX}{next(_RID_COUNTER):x}"


_MAX_UNITS: Final = 2**62
_DEFAULT_TTL_MS: Final = round(DEFAULT_TTL_S * 1000)


def check_reserve(rid: str, lines: Sequence[LineRequest], ttl_s: float) -> int:
    """Validate a reserve; returns the TTL in ms. Raises ConfigurationError, writes nothing."""
    if type(rid) is not str or not rid or len(rid) > _MAX_RID:
        check_rid(rid)
    if not (ttl_s > 0) or ttl_s > 366 * 86400:
        raise ConfigurationError(f"hold ttl must be between 0 and a year of seconds, got {ttl_s}")
    keys = set()
    for line in lines:
        if type(line) is not LineRequest:
            raise ConfigurationError(f"a reserve takes LineRequest objects, got {line!r}")
        key, limit, amount, _ = line
        if not (key[0] and key[1] and key[2]):
            raise ConfigurationError(f"line {key} needs a scope, a window and a dimension")
        # One exact-type test and one chained comparison per number on the common path;
        # check_units then names whatever is wrong (a bool, a float, a negative, 2**70).
        if (
            type(limit) is not int
            or type(amount) is not int
            or not (0 <= limit <= _MAX_UNITS)
            or not (0 <= amount <= _MAX_UNITS)
        ):
            check_units(limit, what=f"limit of {key}")
            check_units(amount, what=f"amount of {key}")
        keys.add(key)
    if len(keys) != len(lines):
        raise ConfigurationError("a line appears twice in one reserve; merge its amounts")
    if ttl_s == DEFAULT_TTL_S:
        return _DEFAULT_TTL_MS
    return max(1, round(ttl_s * 1000))


def check_rid(rid: str) -> None:
    if type(rid) is not str or not rid or len(rid) > _MAX_RID:
        raise ConfigurationError(f"a reservation id must be a string of 1–{_MAX_RID} characters")


def check_actual(actual: Mapping[str, int] | None) -> Mapping[str, int] | None:
    if actual is None:
        return None
    for dim, value in actual.items():
        if type(value) is not int or not (0 <= value <= _MAX_UNITS):
            check_units(value, what=f"actual {dim}")
    return actual


def denial_error(
    denial: Denial, lines: Sequence[LineRequest], currency: str = "USD"
) -> BudgetExceeded:
    """The typed exception for a denial, with amounts in the units people read."""
    dim = denial.key.dimension
    cls = DENIAL_TYPES.get(dim, BudgetExceeded)
    end_ms = lines[denial.level].window_end_ms if denial.level < len(lines) else None
    resets = datetime.fromtimestamp(end_ms / 1000, tz=UTC) if end_ms else None
    return cls(
        scope=denial.key.scope,
        dimension=dim,
        limit=display(dim, denial.limit, currency),
        spent=display(dim, denial.spent, currency),
        held=display(dim, denial.held, currency),
        requested=display(dim, denial.requested, currency),
        window=denial.key.window,
        resets_at=resets,
        reason=denial.reason,
    )


class guarded:
    """Every driver error becomes LedgerUnavailable, chained to the original."""

    __slots__ = ("backend", "errors")

    def __init__(self, backend: str, errors: tuple[type[BaseException], ...]) -> None:
        self.backend = backend
        self.errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or isinstance(exc, ConfigurationError | BudgetExceeded):
            return
        if isinstance(exc, self.errors):
            raise LedgerUnavailable(self.backend, f"{type(exc).__name__}: {exc}") from exc


def _reraise(backend: str, exc: BaseException) -> NoReturn:
    """
    What ``guarded`` does, for the hot paths that catch driver errors themselves.

    ``reserve``/``commit``/``release`` catch ``storage.base_exceptions`` with a plain
    ``try``/``except`` instead of ``with guarded(...)``: since Python 3.11 a ``try`` costs
    nothing until something is raised, while the context manager costs an object and two
    Python-level calls on every operation. The mapping is the same: our own errors pass
    through, a driver error becomes ``LedgerUnavailable`` chained to the original.
    """
    if isinstance(exc, ConfigurationError | BudgetExceeded):
        raise exc
    raise LedgerUnavailable(backend, f"{type(exc).__name__}: {exc}") from exc


def _pick(keys: Sequence[LineKey], states: list[LineState]) -> list[LineState | None]:
    found = {state.key: state for state in states}
    return [found.get(key) for key in keys]


def _describe(storage: Any, url: str) -> str:
    return redact(url) if url else f"{getattr(storage, 'scheme', 'custom')}://"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class ThreadedStorage:
    """
    A sync storage served to asyncio. ``memory://`` never blocks and is called directly.
    A store that can fail fast (SQLite) runs each operation inline first, and in a worker
    thread only when it would have to wait for another writer: an operation takes tens of
    microseconds, a thread hand-off on a busy 2-core host takes milliseconds. Any other
    store runs in a worker thread.
    """

    def __init__(self, storage: Storage) -> None:
        self.sync = storage
        self.scheme = storage.scheme
        self.base_exceptions = storage.base_exceptions
        self._direct = storage.scheme == "memory"
        self._fail_fast = getattr(storage, "fail_fast", None)
        self._is_busy = getattr(storage, "is_busy", None)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._direct:
            return fn(*args, **kwargs)
        if self._fail_fast is not None and self._is_busy is not None:
            try:
                with self._fail_fast():
                    return fn(*args, **kwargs)
            except Exception as exc:
                if not self._is_busy(exc):
                    raise
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        result: ReserveOutcome = await self._call(
            self.sync.reserve, rid, lines, ttl_ms, on_expiry=on_expiry, charge_now=charge_now
        )
        return result

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.sync, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(fn, *args, **kwargs)

        return call

    async def aclose(self) -> None:
        await self._call(self.sync.close)


def _driver_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import redis

        errors.append(redis.RedisError)
    except ImportError:
        pass
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


_ALL_DRIVER_ERRORS: Final = _driver_errors()


def as_async_storage(storage: AsyncStorage | Storage) -> Any:
    """An async face for any store: sync stores are served through ThreadedStorage."""
    return ThreadedStorage(storage) if isinstance(storage, Storage) else storage


def as_sync_storage(storage: Storage) -> Storage:
    """A sync store as it is (the sync Ledger never wraps)."""
    return storage
