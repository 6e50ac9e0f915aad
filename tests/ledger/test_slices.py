"""
Slices under load: several SlicedStorage nodes over one shared ledger (Redis and SQLite
across processes, memory across threads) race one chain to exhaustion with zero
overshoot and books equal to the workers' totals; the shared store sees a fraction of
the calls; stranded capacity is measured and returned; a dead node's leases are charged.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execbudget.clock import ManualClock
from execbudget.ledger import Ledger, LineKey, LineRequest, MemoryStorage, make_storage, reconcile
from execbudget.ledger.slices import SlicedStorage

from ._exhaust import MAX_AMOUNT, ORG_LIMIT, chain_for, drain, process_main
from ._redis_backend import REDIS_URL, drop_prefix, new_prefix, require_redis, url_with
from .test_exhaustion import check_books

PROCESSES = 4


def sliced_ledger(url: str) -> Ledger:
    """One node per process: a SlicedStorage over the shared ledger at ``url``."""
    return Ledger(SlicedStorage(make_storage(url)))


def race(url: str, threads: int) -> tuple[int, int, int]:
    ctx = multiprocessing.get_context("spawn")
    jobs = [(url, p, threads, "", sliced_ledger) for p in range(PROCESSES)]
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(process_main, jobs)
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_redis()
    prefix = new_prefix("slices")
    yield prefix
    drop_prefix(prefix)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.xdist_group("exhaustion")
def test_sliced_nodes_over_redis_race_to_exhaustion(redis_prefix: str) -> None:
    url = url_with(REDIS_URL, prefix=redis_prefix)
    committed, grants, _ = race(url, threads=16)
    assert grants > ORG_LIMIT // MAX_AMOUNT
    check_books(url, committed)


@pytest.mark.slow
@pytest.mark.xdist_group("exhaustion")
def test_sliced_nodes_over_sqlite_race_to_exhaustion(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    Ledger.from_url(url).close()
    committed, grants, _ = race(url, threads=8)
    assert grants > ORG_LIMIT // MAX_AMOUNT
    check_books(url, committed)


def test_sliced_nodes_over_memory_race_to_exhaustion() -> None:
    shared = MemoryStorage()
    results: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def node(n: int) -> None:
        ledger = Ledger(SlicedStorage(shared, own_base=False))
        inner = [threading.Thread(target=work, args=(ledger, n * 4 + t)) for t in range(4)]
        for t in inner:
            t.start()
        for t in inner:
            t.join()
        ledger.close()

    def work(ledger: Ledger, worker: int) -> None:
        result = drain(ledger, worker, seed=worker)
        with lock:
            results.append(result)

    nodes = [threading.Thread(target=node, args=(n,)) for n in range(4)]
    for t in nodes:
        t.start()
    for t in nodes:
        t.join()
    committed = sum(r[0] for r in results)
    lines = shared.lines()
    org = next(line for line in lines if line.key.scope == "org:hot")
    assert org.spent == committed <= org.limit and org.held == 0
    assert org.spent / org.limit >= 0.99
    assert all(line.spent <= line.limit and line.held == 0 for line in lines)
    assert reconcile(lines, shared.events(0, 10**7)) == []


def test_the_shared_store_sees_a_fraction_of_the_calls() -> None:
    clock = ManualClock()
    shared = MemoryStorage(clock=clock)
    node = SlicedStorage(shared, clock=clock, calls_per_slice=64)
    ledger = Ledger(node)
    rng = random.Random(1)
    for _ in range(2000):
        amount = rng.randint(1, MAX_AMOUNT)
        rid = ledger.reserve(chain_for(0, amount), ttl_s=60)
        ledger.commit(rid, {"cost": amount // 2})
    assert node.base_calls < 2000 / 16, node.base_calls
    ledger.close()
    org = next(line for line in shared.lines() if line.key.scope == "org:hot")
    assert org.held == 0 and org.spent == sum(
        e.amounts[org.key] for e in ledger.events(0, 10**6) if e.kind == "commit"
    )


def test_stranded_capacity_is_measured_and_returned_when_idle() -> None:
    clock = ManualClock()
    shared = MemoryStorage(clock=clock)
    nodes = [SlicedStorage(shared, clock=clock, calls_per_slice=10, idle_ms=5_000) for _ in "ab"]
    for i, node in enumerate(nodes):
        Ledger(node).commit(Ledger(node).reserve(chain_for(i, 10), ttl_s=60), {"cost": 4})
    stranded = sum(node.stranded()["cost"] for node in nodes)
    org = next(line for line in shared.lines() if line.key.scope == "org:hot")
    assert stranded > 0 and org.held == stranded + 8  # leased: 8 spent, not yet reported
    clock.advance(6)
    for node in nodes:
        node.tick()
    assert sum(node.stranded().get("cost", 0) for node in nodes) == 0
    org = next(line for line in shared.lines() if line.key.scope == "org:hot")
    assert (org.spent, org.held) == (8, 0)


def test_a_dead_nodes_leases_are_charged_in_full_when_they_expire() -> None:
    clock = ManualClock()
    shared = MemoryStorage(clock=clock)
    node = SlicedStorage(shared, clock=clock, calls_per_slice=10, lease_ttl_ms=30_000)
    ledger = Ledger(node)
    ledger.reserve(chain_for(0, 10), ttl_s=5)  # in flight when the node dies
    leased = next(line for line in shared.lines() if line.key.scope == "org:hot").held
    assert leased >= 10
    # The node is gone (never closed, never reports); the shared reaper charges its lease.
    clock.advance(3600)
    assert Ledger(shared).reap() >= 1
    org = next(line for line in shared.lines() if line.key.scope == "org:hot")
    assert (org.spent, org.held) == (leased, 0)  # over-counted, never under: zero overshoot


def test_a_line_blocked_on_the_shared_store_denies_at_the_next_top_up() -> None:
    shared: Any = MemoryStorage()
    node = Ledger(SlicedStorage(shared, calls_per_slice=2))
    node.reserve(chain_for(0, 5))
    Ledger(shared).block(LineKey("org:hot", "total", "cost"), "killed")
    outcome = None
    for _ in range(5):  # the node serves at most what it already leased
        _, outcome = node.try_reserve(chain_for(0, 5))
        if outcome.denial is not None:
            break
    assert outcome is not None and outcome.denial is not None
    assert outcome.denial.reason == "killed"
    assert isinstance(chain_for(0, 1)[0], LineRequest)
