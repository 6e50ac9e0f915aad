"""
Backends chosen by URL: ``memory://``, ``sqlite:///path``, ``redis://``, ``rediss://``,
``postgresql://``. Optional drivers are imported only when their scheme is used, and a
missing one gets an install hint instead of an ImportError.
"""

from __future__ import annotations

import importlib
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError

DEFAULT_URL: Final = "sqlite:///.execbudget/ledger.db"

#: scheme → (sync class, async class, extra to install)
_BACKENDS: Final[dict[str, tuple[str, str, str]]] = {
    "memory": ("execbudget.ledger._memory:MemoryStorage", "", ""),
    "sqlite": ("execbudget.ledger._sqlite:SQLiteStorage", "", ""),
    "redis": (
        "execbudget.ledger.redis:RedisStorage",
        "execbudget.ledger.redis:AsyncRedisStorage",
        "redis",
    ),
    "rediss": (
        "execbudget.ledger.redis:RedisStorage",
        "execbudget.ledger.redis:AsyncRedisStorage",
        "redis",
    ),
    "postgresql": (
        "execbudget.ledger.postgres:PostgresStorage",
        "execbudget.ledger.postgres:AsyncPostgresStorage",
        "postgres",
    ),
    "postgres": (
        "execbudget.ledger.postgres:PostgresStorage",
        "execbudget.ledger.postgres:AsyncPostgresStorage",
        "postgres",
    ),
}


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        raise ConfigurationError(f"unknown ledger URL {url!r}; use one of {known}")
    return scheme


def _load(target: str, extra: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"this ledger backend needs an optional dependency ({exc.name}); "
            f'install it with: pip install "execbudget[{extra}]"'
        ) from exc
    return getattr(module, attr)


def _options(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} has a host; write sqlite:///relative.db or sqlite:////abs.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"sqlite URL {url!r} names no file; e.g. sqlite:///ledger.db")
    return path


def _whole(options: dict[str, str], name: str) -> int:
    try:
        return int(options[name])
    except ValueError:
        raise ConfigurationError(
            f"sqlite {name}={options[name]!r} must be a whole number"
        ) from None


def _flag(options: dict[str, str], name: str) -> bool:
    value = options[name].lower()
    if value not in ("0", "1", "true", "false"):
        raise ConfigurationError(f"sqlite {name}={options[name]!r} must be 1, 0, true or false")
    return value in ("1", "true")


def make_storage(url: str, *, clock: Clock | None = None, asynchronous: bool = False) -> Any:
    """Build the storage for ``url``; async backends where the driver has them."""
    scheme = scheme_of(url)
    sync_target, async_target, extra = _BACKENDS[scheme]
    options = _options(url)
    clock = clock or SYSTEM_CLOCK
    if scheme == "memory":
        return _load(sync_target, extra)(urlsplit(url).netloc, clock=clock)
    if scheme == "sqlite":
        allowed = ("synchronous", "busy_timeout_ms", "wal_autocheckpoint", "group_commit")
        unknown = set(options) - set(allowed)
        if unknown:
            raise ConfigurationError(
                f"unknown sqlite URL option(s) {sorted(unknown)}; allowed: {', '.join(allowed)}"
            )
        tuning: dict[str, Any] = {
            name: _whole(options, name)
            for name in ("busy_timeout_ms", "wal_autocheckpoint")
            if name in options
        }
        if "group_commit" in options:
            tuning["group_commit"] = _flag(options, "group_commit")
        cls = _load(sync_target, extra)
        return cls(
            sqlite_path(url),
            synchronous=options.get("synchronous", "NORMAL"),
            clock=clock,
            **tuning,
        )
    cls = _load(async_target if asynchronous else sync_target, extra)
    return cls.from_url(url, clock=None if clock is SYSTEM_CLOCK else clock)
