"""
PostgreSQL faults (issue 5, item 3), on a private instance this module starts on a free
port (never the shared cluster):

* a crash-restart in the middle of a run with ``synchronous_commit=on`` loses no commit a
  client saw acknowledged, and the pools reconnect by themselves;
* a server that is down fails closed: ``LedgerUnavailable`` saying what to check;
* an operation whose answer is lost after the server committed it is retried without
  being applied twice (the rid makes it idempotent);
* a worker SIGKILLed while holding: its holds expire through the reaper, each by its
  policy, and the books agree with the event log.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import psycopg
import pytest

from execbudget.errors import LedgerUnavailable
from execbudget.ledger import (
    AsyncLedger,
    HoldState,
    Ledger,
    LineKey,
    LineRequest,
    ReserveStatus,
    SettleStatus,
    reconcile,
)
from execbudget.ledger.postgres import PostgresStorage

from . import _pg_worker as worker
from ._pg_backend import new_schema, url_with
from ._pg_server import LossyProxy, PrivatePostgres, private_postgres

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pg-faults")]

T = TypeVar("T")
ORG = LineKey("org:acme", "total", "cost")


def chain(amount: int, worker_id: int = 0) -> list[LineRequest]:
    return [
        LineRequest(ORG, 10**12, amount),
        LineRequest(LineKey(f"run:r{worker_id}", "total", "cost"), 10**12, amount),
    ]


class FixedClock:
    """A clock stopped at one instant: the reaper's "now" in the SIGKILL test."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as instance:
        yield instance


@pytest.fixture
def url(server: PrivatePostgres) -> str:
    if not server.running:  # a failed test may have left it down
        server.start()
    return url_with(server.url, schema=new_schema("fault"))


def definitely(call: Callable[[], T], within_s: float = 60.0) -> T:
    """Repeat a call (same arguments, same rid) until the ledger answers, as a client would."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except LedgerUnavailable:
            if time.monotonic() > deadline:
                raise


# -- restart ------------------------------------------------------------------------------
def test_crash_restart_mid_run_loses_no_acknowledged_commit(
    server: PrivatePostgres, url: str
) -> None:
    threads, pairs, actual = 4, 60, 3
    ledger = Ledger.from_url(url_with(url, timeout="10", pool_max="4"))
    acked = [0] * threads
    progress = threading.Semaphore(0)
    failures: list[BaseException] = []

    def run(w: int) -> None:
        try:
            for i in range(pairs):
                rid = f"w{w}-{i}"
                _, held = definitely(partial(ledger.try_reserve, chain(5, w), rid=rid))
                assert held.status in (ReserveStatus.OK, ReserveStatus.DUP), held
                done = definitely(partial(ledger.commit, rid, {"cost": actual}))
                # SETTLED: an earlier attempt of this same commit had reached the server.
                assert done.status in (SettleStatus.OK, SettleStatus.SETTLED), done
                acked[w] += done.charged[ORG]
                progress.release()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            progress.release()

    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for _ in range(threads * pairs // 3):  # a third of the way through
        assert progress.acquire(timeout=60)
    server.restart("immediate")  # SIGQUIT: no checkpoint, WAL replay on start
    assert "automatic recovery in progress" in server.log.read_text(errors="replace")
    assert sum(acked) < threads * pairs * actual, "the run ended before the crash"
    for t in pool:
        t.join(timeout=120)
    assert not failures, failures
    lines = {line.key: line for line in ledger.lines()}
    assert sum(acked) == threads * pairs * actual
    assert lines[ORG].spent == sum(acked), "an acknowledged commit was lost"
    assert lines[ORG].held == 0
    assert reconcile(lines.values(), ledger.events(0, 10**6)) == []
    ledger.close()


# -- server down --------------------------------------------------------------------------
def test_server_down_fails_closed_and_says_what_to_check(server: PrivatePostgres, url: str) -> None:
    fast = url_with(url, timeout="1")
    ledger = Ledger.from_url(fast)
    ledger.reserve(chain(5))
    server.stop("fast")
    try:
        with pytest.raises(LedgerUnavailable) as info:
            ledger.reserve(chain(5))
        message = str(info.value)
        assert f"127.0.0.1:{server.port}" in message
        assert "check that the server is running" in message and "Nothing was spent" in message
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert "refused" in message  # the probe says why: nothing listens there

        with Ledger.from_url(fast) as down, pytest.raises(LedgerUnavailable):
            down.try_reserve(chain(5))  # a ledger made while the server is down

        async def async_face() -> None:
            async with AsyncLedger.from_url(fast) as aledger:
                with pytest.raises(LedgerUnavailable) as ainfo:
                    await aledger.reserve(chain(5))
                assert "check that the server is running" in str(ainfo.value)

        asyncio.run(async_face())
    finally:
        server.start()
    try:
        # Back up: the same ledger reconnects on its own. The reserve may come back on the
        # hot connection while the pool (which `lines` uses) is still reconnecting.
        definitely(lambda: ledger.reserve(chain(5)))
        lines = definitely(ledger.lines)
        assert {line.key: line.held for line in lines}[ORG] == 10
    finally:
        ledger.close()


# -- a lost answer, retried -----------------------------------------------------------------
def test_lost_answer_is_retried_without_applying_twice(server: PrivatePostgres, url: str) -> None:
    proxy = LossyProxy(server.port)
    via_proxy = url.replace(f":{server.port}/", f":{proxy.port}/")
    ledger = Ledger.from_url(url_with(via_proxy, pool_min="1", pool_max="1"))
    try:

        def warm() -> None:
            """Prepare reserve and settle on the one pooled connection (it is new after a
            loss): the next call of each is then one round trip, the one to lose."""
            ledger.commit(ledger.reserve(chain(1, worker_id=9)), {"cost": 1})

        warm()
        proxy.armed.set()
        _, outcome = ledger.try_reserve(chain(100), rid="r1")
        assert proxy.swallowed.is_set(), "the proxy did not lose the first answer"
        # The storage retried on a fresh connection; the server had applied the first try.
        assert outcome.status is ReserveStatus.DUP
        assert {line.key: line.held for line in ledger.lines()}[ORG] == 100
        assert [e.kind for e in ledger.events(0, 100) if e.rid == "r1"] == ["reserve"]

        proxy.swallowed.clear()
        warm()
        proxy.armed.set()
        done = ledger.commit("r1", {"cost": 60})
        assert proxy.swallowed.is_set()
        assert done.status is SettleStatus.SETTLED and done.charged[ORG] == 60

        # The caller's own retries answer the same and change nothing.
        assert ledger.commit("r1", {"cost": 60}).status is SettleStatus.SETTLED
        assert ledger.try_reserve(chain(100), rid="r1")[1].status is ReserveStatus.SETTLED
        lines = ledger.lines()
        assert {line.key: (line.spent, line.held) for line in lines}[ORG] == (62, 0)
        events = [e for e in ledger.events(0, 100) if e.rid == "r1"]
        assert [e.kind for e in events] == ["reserve", "commit"]
        assert reconcile(lines, ledger.events(0, 100)) == []
    finally:
        ledger.close()
        proxy.close()


# -- SIGKILL of a worker holding reservations ------------------------------------------------
def test_sigkilled_worker_holds_expire_and_books_match_the_event_log(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    report, ready, spinning = ctx.Queue(), ctx.Event(), ctx.Event()
    proc = ctx.Process(target=worker.hold_and_spin, args=(url, report, ready, spinning))
    proc.start()
    try:
        assert ready.wait(60), "the worker never made its holds"
        committed, held = report.get(timeout=10)
        assert spinning.wait(60), "the worker never got going"
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)  # mid-flight, holding
        proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL

    with Ledger.from_url(url) as ledger:
        assert {h.rid for h in ledger.holds("org:killed")} == {rid for rid, _ in held}
        later = ledger.now_ms() + 120_000  # every deadline (TTL 60 s) has passed
    reaper = Ledger(PostgresStorage.from_url(url, clock=FixedClock(later)))
    try:
        assert reaper.reap(limit=1000) >= len(held)
        for rid, charge in held:
            state = reaper.hold(rid)
            assert state is not None
            assert state.state is (HoldState.EXPIRED_CHARGE if charge else HoldState.EXPIRED)
        lines = {line.key: line for line in reaper.lines()}
        charged = sum(worker.AMOUNT for _, charge in held if charge)
        assert lines[worker.HELD].spent == committed + charged
        assert all(line.held == 0 for line in lines.values())
        assert reaper.holds() == []
        assert reconcile(lines.values(), reaper.events(0, 10**6)) == []
    finally:
        reaper.close()
