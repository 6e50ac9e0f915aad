"""
Slices under load: several SlicedStorage nodes over one shared ledger (Redis and SQLite
across processes, memory across threads) race one chain to exhaustion with zero
overshoot and books equal to the workers' totals; the shared store sees a fraction of
the calls; stranded capacity is measured and returned; a dead node's leases are charged.

``LocalChain`` (the fast local path) races the same way, gives the same answers, books and
event log as the ``Ledger`` facade on the same calls, and refuses bad input writing nothing.
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
from execbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    CostBudgetExceeded,
    LedgerUnavailable,
)
from execbudget.ledger import (
    HoldState,
    Ledger,
    LineKey,
    LineRequest,
    MemoryStorage,
    ReserveStatus,
    SettleStatus,
    make_storage,
    reconcile,
)
from execbudget.ledger.slices import SlicedStorage

from ._exhaust import GIVE_UP_AFTER, MAX_AMOUNT, ORG_LIMIT, chain_for, drain, process_main
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


# -- the fast local path: LocalChain ------------------------------------------------------
def drain_chain(
    node: SlicedStorage, worker: int, seed: int, prefix: str = ""
) -> tuple[int, int, int]:
    """``_exhaust.drain`` through a ``LocalChain`` handle: reserve(amount) / commit(rid, n)."""
    handle = node.chain(chain_for(worker, 0, prefix), ttl_s=60)
    rng = random.Random(seed)
    committed = grants = denials = streak = 0
    while streak < GIVE_UP_AFTER:
        amount = rng.randint(1, MAX_AMOUNT)
        if worker % 4 < 2:  # both ways in: reserve and try_reserve each carry the fast path
            rid, outcome = handle.try_reserve(amount)
            granted = outcome.status is ReserveStatus.OK
        else:
            try:
                rid, granted = handle.reserve(amount), True
            except BudgetExceeded:
                granted = False
        if not granted:
            denials += 1
            streak += 1
            continue
        streak = 0
        grants += 1
        actual = rng.randint(amount // 2, amount)
        assert handle.commit(rid, actual) is SettleStatus.OK
        committed += actual
    return committed, grants, denials


def chain_process_main(url: str, proc: int, threads: int) -> tuple[int, int, int]:
    """One process, one node, ``threads`` workers each on its own LocalChain handle."""
    node = SlicedStorage(make_storage(url))
    results: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        result = drain_chain(node, worker, seed=proc * 1000 + worker)
        with lock:
            results.append(result)

    pool = [threading.Thread(target=run, args=(proc * threads + t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    node.close()
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.xdist_group("exhaustion")
def test_local_chains_over_redis_race_to_exhaustion(redis_prefix: str) -> None:
    url = url_with(REDIS_URL, prefix=redis_prefix)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(chain_process_main, [(url, p, 16) for p in range(PROCESSES)])
    committed, grants = sum(r[0] for r in results), sum(r[1] for r in results)
    assert grants > ORG_LIMIT // MAX_AMOUNT
    check_books(url, committed)


def test_local_chains_over_memory_race_to_exhaustion() -> None:
    shared = MemoryStorage()
    results: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def node_main(n: int) -> None:
        node = SlicedStorage(shared, own_base=False)
        ledger = Ledger(node)

        def work(worker: int) -> None:
            # Half the workers use handles, half the facade, on the same node.
            result = (
                drain_chain(node, worker, worker) if worker % 2 else drain(ledger, worker, worker)
            )
            with lock:
                results.append(result)

        inner = [threading.Thread(target=work, args=(n * 4 + t,)) for t in range(4)]
        for t in inner:
            t.start()
        for t in inner:
            t.join()
        node.close()

    nodes = [threading.Thread(target=node_main, args=(n,)) for n in range(4)]
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


def _script(seed: int) -> list[tuple[str, int, int]]:
    """A random run of reserves, commits, releases, retries, overruns and clock moves."""
    rng = random.Random(seed)
    ops: list[tuple[str, int, int]] = []
    for _ in range(600):
        r = rng.random()
        if r < 0.5:
            ops.append(("reserve", rng.randint(0, 40), 0))
        elif r < 0.8:
            ops.append(("commit", rng.randint(0, 10**6), rng.randint(0, 20)))
        elif r < 0.81:
            ops.append(("commit", rng.randint(0, 10**6), 45))  # an overrun, unless settled
        elif r < 0.85:
            ops.append(("commit-full", rng.randint(0, 10**6), 0))
        elif r < 0.9:
            ops.append(("release", rng.randint(0, 10**6), 0))
        elif r < 0.93:
            ops.append(("retry", rng.randint(0, 10**6), rng.randint(0, 40)))
        elif r < 0.95:
            ops.append(("unblock", 0, 0))
        else:
            ops.append(("advance", rng.choice([1, 3, 70]), 0))
    return ops


def _books(node: SlicedStorage, shared: MemoryStorage) -> tuple[Any, ...]:
    return (
        node.lines(),
        shared.lines(),
        node.events(0, 10**6),
        sorted(node.holds(), key=lambda h: h.rid),
        node.base_calls,
        node.stranded(),
    )


def _attempt(
    face: str,
    raising: bool,
    handle: Any,
    ledger: Ledger,
    template: list[LineRequest],
    amount: int,
    rid: str,
) -> Any:
    """One reserve through a face; with ``raising``, the raising API (same information)."""
    lines = [LineRequest(r.key, r.limit, amount) for r in template]
    if not raising:
        if face == "chain":
            return handle.try_reserve(amount, rid=rid)[1]
        return ledger.try_reserve(lines, rid=rid, ttl_s=5)[1]
    try:
        got = (
            handle.reserve(amount, rid=rid)
            if face == "chain"
            else ledger.reserve(lines, rid=rid, ttl_s=5)
        )
    except BudgetExceeded as exc:
        return type(exc).__name__, str(exc)
    return got


@pytest.mark.parametrize("raising", [False, True], ids=["try_reserve", "reserve"])
@pytest.mark.parametrize("seed", range(6))
def test_a_local_chain_is_indistinguishable_from_the_facade(seed: int, raising: bool) -> None:
    """The same calls through a LocalChain and through Ledger(node): same everything."""
    limits = (12_000, 6_000, 4_000, 10**6)
    template = [
        LineRequest(LineKey(scope, "total", "cost"), limit, 0)
        for scope, limit in zip(("org:o", "team:t", "run:r", "agent:a"), limits, strict=True)
    ]
    runs = []
    for face in ("chain", "facade"):
        clock = ManualClock()
        shared = MemoryStorage(clock=clock)
        node = SlicedStorage(shared, clock=clock, calls_per_slice=8, node="n", lease_ttl_ms=30_000)
        handle = node.chain(template, ttl_s=5)
        ledger = Ledger(node)
        rids: list[str] = []
        seen = []
        for i, (op, x, y) in enumerate(_script(seed)):
            if op == "reserve" or (op == "retry" and not rids):
                rid = f"h{i}"
                seen.append(_attempt(face, raising, handle, ledger, template, x, rid))
                rids.append(rid)
            elif op == "retry":
                rid = rids[x % len(rids)]
                seen.append(_attempt(face, raising, handle, ledger, template, y, rid))
            elif op == "advance":
                clock.advance(x)
                seen.append(ledger.reap())
            elif op == "unblock":
                for line in template:
                    ledger.block(line.key, None)
            elif rids:
                rid = rids[x % len(rids)]
                if op == "release":
                    status = handle.release(rid) if face == "chain" else ledger.release(rid).status
                elif op == "commit-full":
                    status = handle.commit(rid) if face == "chain" else ledger.commit(rid).status
                elif face == "chain":
                    status = handle.commit(rid, y)
                else:
                    status = ledger.commit(rid, {"cost": y}).status
                seen.append(status)
            seen.append(_books(node, shared))
        node.close()
        runs.append((seen, shared.lines()))
    assert runs[0] == runs[1]
    org = next(line for line in runs[0][1] if line.key.scope == "org:o")
    assert org.held == 0 and org.spent <= org.limit + org.overrun


def test_local_chain_denial_names_the_refusing_line() -> None:
    node = SlicedStorage(MemoryStorage(), calls_per_slice=4)
    handle = node.chain(
        [
            LineRequest(LineKey("org:o", "total", "cost"), 1_000, 0),
            LineRequest(LineKey("run:r", "total", "cost"), 30, 0),
        ]
    )
    rid = handle.reserve(20)
    with pytest.raises(CostBudgetExceeded) as info:
        handle.reserve(20)
    assert info.value.scope == "run:r"
    _, outcome = handle.try_reserve(11)
    assert outcome.denial is not None and outcome.denial.level == 1
    assert (outcome.denial.held, outcome.denial.requested) == (20, 11)
    assert handle.commit(rid, 5) is SettleStatus.OK
    assert handle.commit(rid, 5) is SettleStatus.SETTLED  # at most once
    assert handle.release(rid) is SettleStatus.SETTLED
    assert handle.commit("never-made", 1) is SettleStatus.UNKNOWN
    again = handle.reserve(25)
    assert handle.commit(again, 40) is SettleStatus.OVERRUN  # recorded and blocking
    with pytest.raises(BudgetExceeded) as blocked:
        handle.reserve(0)
    assert blocked.value.reason == "overrun"
    node.close()


@pytest.mark.parametrize("amount", [-1, 2**70, 1.5, True, "3"])
def test_local_chain_refuses_bad_amounts_and_writes_nothing(amount: Any) -> None:
    node = SlicedStorage(MemoryStorage())
    handle = node.chain(chain_for(0, 0))
    with pytest.raises(ConfigurationError):
        handle.reserve(amount)
    with pytest.raises(ConfigurationError):
        handle.try_reserve(amount)
    rid = handle.reserve(3)
    before = (node.lines(), node.events(0, 100))
    with pytest.raises(ConfigurationError):
        handle.commit(rid, amount)
    with pytest.raises(ConfigurationError):
        handle.reserve(3, rid="")
    with pytest.raises(ConfigurationError):
        handle.commit("x" * 201, 1)
    assert (node.lines(), node.events(0, 100)) == before
    assert node.hold(rid) is not None and node.hold(rid).state is HoldState.HELD  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [chain_for(0, 0)[0], chain_for(0, 0)[0]],
        [
            LineRequest(LineKey("org:o", "total", "cost"), 10, 0),
            LineRequest(LineKey("org:o", "total", "tokens"), 10, 0),
        ],
        [LineRequest(LineKey("org:o", "total", "cost"), -10, 0)],
        [LineRequest(LineKey("", "total", "cost"), 10, 0)],
    ],
    ids=["empty", "duplicate-line", "two-dimensions", "negative-limit", "no-scope"],
)
def test_a_bad_local_chain_is_refused(lines: list[LineRequest]) -> None:
    node = SlicedStorage(MemoryStorage())
    with pytest.raises(ConfigurationError):
        node.chain(lines)
    with pytest.raises(ConfigurationError):
        node.chain(chain_for(0, 0), ttl_s=0)
    assert node.lines() == [] and node.events() == []


class _FlakyError(Exception):
    pass


class _FlakyStorage(MemoryStorage):
    """A shared store whose driver fails on demand (to check the error mapping)."""

    base_exceptions = (_FlakyError,)
    down = False

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise _FlakyError("connection refused")
        return super().reserve(*args, **kwargs)


def test_a_shared_store_failure_on_the_slow_path_is_ledger_unavailable() -> None:
    shared = _FlakyStorage()
    node = SlicedStorage(shared, calls_per_slice=2)
    handle = node.chain(chain_for(0, 0))
    handle.commit(handle.reserve(5), 5)  # leased: 5 + 2 × 5
    shared.down = True
    handle.commit(handle.reserve(5), 5)  # served locally: the store is not asked
    with pytest.raises(LedgerUnavailable) as info:  # a top-up: the store is asked
        for _ in range(3):
            handle.reserve(5)
    assert isinstance(info.value.__cause__, _FlakyError)


def test_the_policy_limit_of_a_local_chain_applies_like_the_facade() -> None:
    clock = ManualClock()
    shared = MemoryStorage(clock=clock)
    node = SlicedStorage(shared, clock=clock, calls_per_slice=4)
    ledger = Ledger(node)
    handle = node.chain(chain_for(0, 0))
    handle.reserve(10)
    lower = [
        LineRequest(r.key, 15 if r.key.scope == "org:hot" else r.limit, 10) for r in chain_for(0, 0)
    ]
    _, outcome = ledger.try_reserve(lower)  # the facade lowers the org limit on the group
    assert outcome.denial is not None and outcome.denial.limit == 15
    rid = handle.reserve(10)  # the handle's own limit (ORG_LIMIT) applies again
    ledger.set_limit(LineKey("org:hot", "total", "cost"), 25)  # an operator's limit wins
    with pytest.raises(CostBudgetExceeded):
        handle.reserve(10)
    ledger.set_limit(LineKey("org:hot", "total", "cost"), None)
    handle.commit(rid, 1)
    handle.reserve(10)
