"""
The PostgreSQL entries of the contract suite and the helpers the PostgreSQL tests share.

Each test gets its own schema on the shared server (``EXECBUDGET_TEST_POSTGRES_URL``, or
``postgresql://postgres@127.0.0.1:5432/test``) and drops exactly that schema afterwards;
nothing here drops or truncates anything else. When the server is unreachable the tests
skip locally and fail under CI (``need_service``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from execbudget.clock import Clock
from execbudget.ledger.postgres import AsyncPostgresStorage, PostgresStorage

from ..conftest import need_service

POSTGRES_URL = os.environ.get(
    "EXECBUDGET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_OURS = ("schema", "synchronous_commit", "pool_min", "pool_max", "timeout", "prepare_threshold")


def base_url(url: str = POSTGRES_URL) -> str:
    """The URL for a plain psycopg connection: without execbudget's options."""
    parts = urlsplit(url)
    rest = [(k, v) for k, v in parse_qsl(parts.query) if k not in (*_OURS, "migrate")]
    return urlunsplit(parts._replace(query=urlencode(rest)))


@cache
def _unreachable(url: str) -> str | None:
    try:
        with psycopg.connect(base_url(url), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{base_url(url)}: {' '.join(str(exc).split())}"
    return None


def require_postgres(url: str = POSTGRES_URL) -> None:
    problem = _unreachable(url)
    if problem is not None:
        need_service("PostgreSQL", problem)


def new_schema(kind: str = "t") -> str:
    return f"ebtest_{kind}_{uuid.uuid4().hex[:12]}"


def url_with(url: str = POSTGRES_URL, **options: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def drop_schema(schema: str, url: str = POSTGRES_URL) -> None:
    """Drop one test schema (and nothing else)."""
    assert schema.startswith("ebtest_"), schema
    with psycopg.connect(base_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def make_postgres(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    require_postgres()
    schema = new_schema()
    storage = PostgresStorage.from_url(url_with(schema=schema, pool_max="2"), clock=clock)
    try:
        yield storage
    finally:
        storage.close()
        drop_schema(schema)


@asynccontextmanager
async def make_postgres_async(clock: Clock, tmp_path: Path) -> AsyncIterator[Any]:
    require_postgres()
    schema = new_schema()
    storage = AsyncPostgresStorage.from_url(url_with(schema=schema, pool_max="2"), clock=clock)
    try:
        yield storage
    finally:
        await storage.aclose()
        drop_schema(schema)
