"""
The Redis entries of the contract suite and the helpers the Redis tests share.

Each test gets its own key prefix (so its own hash tag) on the shared server and deletes
exactly that prefix afterwards; nothing here flushes a database. The server is
``EXECBUDGET_TEST_REDIS_URL`` or 127.0.0.1:6379; when it is unreachable the tests skip
locally and fail under CI (``need_service``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import redis

from execbudget.clock import Clock
from execbudget.ledger.redis import AsyncRedisStorage, RedisStorage

from ..conftest import need_service

REDIS_URL = os.environ.get("EXECBUDGET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@cache
def _unreachable(url: str) -> str | None:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"{url}: {exc}"
    return None


def require_redis(url: str = REDIS_URL) -> None:
    problem = _unreachable(url)
    if problem is not None:
        need_service("Redis", problem)


def new_prefix(kind: str = "t") -> str:
    return f"ebtest:{kind}:{uuid.uuid4().hex[:12]}:"


def url_with(url: str, **options: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def drop_prefix(prefix: str, url: str = REDIS_URL) -> int:
    """Delete every key of one ledger prefix (and nothing else)."""
    pattern = "{" + prefix + "}*"
    with redis.Redis.from_url(url) as client:
        names = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(names), 500):
            client.delete(*names[i : i + 500])
    return len(names)


@contextmanager
def make_redis(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    require_redis()
    prefix = new_prefix()
    storage = RedisStorage.from_url(url_with(REDIS_URL, prefix=prefix), clock=clock)
    try:
        yield storage
    finally:
        storage.close()
        drop_prefix(prefix)


@asynccontextmanager
async def make_redis_async(clock: Clock, tmp_path: Path) -> AsyncIterator[Any]:
    require_redis()
    prefix = new_prefix()
    storage = AsyncRedisStorage.from_url(url_with(REDIS_URL, prefix=prefix), clock=clock)
    try:
        yield storage
    finally:
        await storage.aclose()
        drop_prefix(prefix)
