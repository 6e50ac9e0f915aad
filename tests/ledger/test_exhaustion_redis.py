"""
Redis under the exhaustion race (issue 5, item 2): 4 processes × 16 workers drain one
chain with a hot org line; then two sets of processes, each set reaching the server by a
different address with its own connection pools ("two hosts"), share one budget.

Zero overshoot on every line, the ledger's totals equal the workers' totals, and the
event log explains the books.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest

from ._exhaust import MAX_AMOUNT, ORG_LIMIT, process_main
from ._redis_backend import REDIS_URL, drop_prefix, new_prefix, require_redis, url_with
from .test_exhaustion import check_books

PROCESSES = 4
THREADS = 16

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.xdist_group("exhaustion")]


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    prefix = new_prefix("race")
    yield prefix
    drop_prefix(prefix)


def _second_host(url: str) -> str:
    """The same server by another name, so the second set shares no pool with the first."""
    if "127.0.0.1" in url:
        return url.replace("127.0.0.1", "localhost")
    return url


def race(urls: list[str]) -> tuple[int, int, int]:
    jobs = [(url, p, THREADS) for url in urls for p in range(PROCESSES)]
    jobs = [(url, i, threads) for i, (url, _, threads) in enumerate(jobs)]  # distinct workers
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(jobs)) as pool:
        results = pool.starmap(process_main, jobs)
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


def test_redis_exhaustion_zero_overshoot(prefix: str) -> None:
    url = url_with(REDIS_URL, prefix=prefix)
    committed, grants, denials = race([url])
    assert grants > ORG_LIMIT // MAX_AMOUNT and denials >= PROCESSES * THREADS
    check_books(url, committed)


def test_redis_exhaustion_two_hosts_share_one_budget(prefix: str) -> None:
    url = url_with(REDIS_URL, prefix=prefix)
    committed, grants, denials = race([url, _second_host(url)])
    assert grants > ORG_LIMIT // MAX_AMOUNT and denials >= 2 * PROCESSES * THREADS
    check_books(url, committed)
