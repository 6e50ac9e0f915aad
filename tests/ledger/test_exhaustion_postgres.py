"""
PostgreSQL under the exhaustion race (issue 5, item 2): 4 processes × 16 workers drain one
chain with a hot org line; then two sets of processes share one budget as two "hosts":
one set of sync processes (thread workers, a ``ConnectionPool`` each) reaching the server
as 127.0.0.1, one set of asyncio processes (an ``AsyncConnectionPool`` each) reaching it
as localhost.

Zero overshoot on every line, the ledger's totals equal the workers' totals, the event log
explains the books, and the server counted no deadlock (40P01) during the race: the one
global lock order holds.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from execbudget.ledger import Ledger, LineKey

from ._exhaust import MAX_AMOUNT, process_main
from ._pg_backend import POSTGRES_URL, base_url, drop_schema, new_schema, require_postgres, url_with
from ._pg_exhaust import async_process_main
from .test_exhaustion import check_books

PROCESSES = 4
WORKERS = 16
#: An operator's limit on the org line, below the policy's ``ORG_LIMIT``: the override
#: wins, and the race stays short on a server whose commits wait for a slow fsync.
ORG_OVERRIDE = 8_000

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("exhaustion")]


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    schema = new_schema("race")
    yield schema
    drop_schema(schema)


def _deadlocks() -> int:
    with psycopg.connect(base_url(POSTGRES_URL)) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0])


def _second_host(url: str) -> str:
    """The same server by another name, so the second set shares no pool with the first."""
    return url.replace("127.0.0.1", "localhost") if "127.0.0.1" in url else url


def race(jobs: list[tuple[Any, str]]) -> tuple[int, int, int]:
    """Run ``(process function, url)`` jobs at once; each is one process of WORKERS."""
    args = [(fn, (url, i, WORKERS)) for i, (fn, url) in enumerate(jobs)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(args)) as pool:
        pending = [pool.apply_async(fn, a) for fn, a in args]
        results = [p.get(timeout=120) for p in pending]
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


def check_every_worker_finished(url: str, grants: int) -> None:
    """
    A worker thread that died (a deadlock or any other error) would not report its
    grants, so the log would hold more reserves than the workers' totals.
    """
    with Ledger.from_url(url) as ledger:
        kinds = Counter(e.kind for e in ledger.events(0, 10**7))
    assert kinds == {"reserve": grants, "commit": grants}


def _prepare(url: str) -> None:
    with Ledger.from_url(url) as ledger:  # migrate once, before the race
        ledger.set_limit(LineKey("org:hot", "total", "cost"), ORG_OVERRIDE)


def test_postgres_exhaustion_zero_overshoot(schema: str) -> None:
    # 16 workers share a pool of 8 connections per process: 32 connections in all.
    url = url_with(schema=schema, pool_max="8")
    _prepare(url)
    deadlocks = _deadlocks()
    committed, grants, denials = race([(process_main, url)] * PROCESSES)
    assert grants > ORG_OVERRIDE // MAX_AMOUNT and denials >= PROCESSES * WORKERS
    check_books(url, committed)
    check_every_worker_finished(url, grants)
    assert _deadlocks() == deadlocks, "a deadlock (40P01) happened during the race"


def test_postgres_exhaustion_two_hosts_share_one_budget(schema: str) -> None:
    url = url_with(schema=schema, pool_max="6")
    _prepare(url)
    deadlocks = _deadlocks()
    host_a = [(process_main, url)] * 2
    host_b = [(async_process_main, _second_host(url))] * 2
    committed, grants, denials = race(host_a + host_b)
    assert grants > ORG_OVERRIDE // MAX_AMOUNT and denials >= PROCESSES * WORKERS
    check_books(url, committed)
    check_every_worker_finished(url, grants)
    assert _deadlocks() == deadlocks, "a deadlock (40P01) happened during the race"
