"""
Redis faults (issue 5, item 3) on private redis-server instances we start and stop:

* a crash (SIGKILL) and restart with ``appendonly yes`` + ``appendfsync always`` in the
  middle of a run loses no acknowledged commit, and clients reconnect;
* a server that is down gives ``LedgerUnavailable`` (fail closed) naming what to check,
  and the policy's ``failure_mode: open`` is the only way to run without the ledger;
* an operation retried after a timeout is never applied twice (idempotent rid);
* a worker SIGKILLed while holding: its holds expire and are released or charged per
  ``on_expiry`` by any instance's reaper, and the books match the event log.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import pytest

from execbudget import Enforcer
from execbudget.errors import LedgerUnavailable
from execbudget.ledger import (
    AsyncLedger,
    HoldState,
    Ledger,
    LineKey,
    LineRequest,
    OnExpiry,
    ReserveStatus,
    SettleStatus,
    reconcile,
)
from execbudget.ledger.redis import RedisStorage

from ._redis_backend import REDIS_URL, drop_prefix, new_prefix, require_redis, url_with
from ._redis_server import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]
T = TypeVar("T")

ORG = LineKey("org:acme", "total", "cost")


def chain(worker: int, amount: int, org_limit: int = 10**9) -> list[LineRequest]:
    return [
        LineRequest(ORG, org_limit, amount),
        LineRequest(LineKey(f"run:w{worker}", "total", "cost"), 10**9, amount),
    ]


def retry(op: Callable[[], T], errors: list[LedgerUnavailable], budget_s: float = 20.0) -> T:
    """What a careful caller does: retry the same operation, same rid, until it answers."""
    deadline = time.monotonic() + budget_s
    while True:
        try:
            return op()
        except LedgerUnavailable as exc:
            errors.append(exc)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # back off between attempts; this is not a wait for state


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "aof", appendonly=True, appendfsync="always")
    server.args += ["--enable-debug-command", "yes"]
    server.start()
    yield server
    server.stop()


def test_crash_and_restart_with_appendfsync_always_loses_no_commit(
    aof_server: PrivateRedis,
) -> None:
    url = url_with(aof_server.url, prefix="crash:")
    ledger = Ledger.from_url(url)
    committed = [0] * 4
    done = [0] * 4
    errors: list[LedgerUnavailable] = []
    stop = threading.Event()

    def work(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            rid = f"w{worker}-{n}"
            amount = 1 + n % 7
            lines = chain(worker, amount)
            _, outcome = retry(lambda r=rid, ls=lines: ledger.try_reserve(ls, rid=r), errors)
            assert outcome.status in (ReserveStatus.OK, ReserveStatus.DUP)
            actual = {"cost": amount - 1}
            settled = retry(lambda r=rid, a=actual: ledger.commit(r, a), errors)
            assert settled.status in (SettleStatus.OK, SettleStatus.SETTLED)
            assert settled.charged[ORG] == amount - 1  # a retried commit reports the first
            committed[worker] += amount - 1
            n += 1
            done[worker] = n

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while sum(done) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = sum(committed)
        aof_server.restart()  # SIGKILL: no shutdown, no final fsync
        target = sum(done) + 300
        while sum(done) < target and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert before > 0 and sum(done) >= target, "the run did not go on after the restart"
    with Ledger.from_url(url) as check:
        lines = {line.key: line for line in check.lines()}
        assert lines[ORG].spent == sum(committed) and lines[ORG].held == 0
        assert reconcile(check.lines(), check.events(0, 10**6)) == []
    ledger.close()


def test_server_down_fails_closed_and_says_what_to_check(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "down", appendonly=False)
    server.start()
    url = url_with(server.url, prefix="down:", retries="1")
    with Ledger.from_url(url) as ledger:
        ledger.reserve(chain(0, 5))
        server.stop()
        with pytest.raises(LedgerUnavailable) as info:
            ledger.try_reserve(chain(0, 5))
    message = str(info.value)
    assert f"cannot reach Redis at 127.0.0.1:{server.port}" in message
    assert "check that redis-server is running" in message and "Nothing was spent" in message


async def test_server_down_fails_closed_async(tmp_path: Path) -> None:
    url = url_with(f"redis://127.0.0.1:{_closed_port()}/0", prefix="down:", retries="0")
    async with AsyncLedger.from_url(url) as ledger:
        with pytest.raises(LedgerUnavailable, match="cannot reach Redis"):
            await ledger.try_reserve(chain(0, 5))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


POLICY: dict[str, Any] = {"scopes": [{"match": "run:triage", "limits": {"steps": 5}}]}


def test_fail_open_only_when_the_policy_says_so() -> None:
    url = url_with(f"redis://127.0.0.1:{_closed_port()}/0", retries="0")
    closed = Enforcer(POLICY, url)
    with closed.run("triage") as run, pytest.raises(LedgerUnavailable):
        run.step()
    opened = Enforcer({**POLICY, "failure_mode": "open"}, url)
    with opened.run("triage") as run:
        assert run.hold({"steps": 1}).degraded


def _stall(server: PrivateRedis, seconds: float) -> socket.socket:
    """Make the server busy for a while (DEBUG SLEEP), without waiting for it."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"PING\r\n")
    assert sock.recv(16) == b"+PONG\r\n"  # accepted and registered before it stalls
    sock.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
    return sock


def test_an_operation_retried_after_a_timeout_is_applied_once(aof_server: PrivateRedis) -> None:
    url = url_with(aof_server.url, prefix="retry:", socket_timeout="0.2", retries="0")
    with Ledger.from_url(url) as ledger:
        ledger.reserve(chain(0, 1), rid="warm-up")  # loads the library, opens a connection
        for op in (
            lambda: ledger.try_reserve(chain(0, 40), rid="r1")[1],
            lambda: ledger.commit("r1", {"cost": 30}),
        ):
            with _stall(aof_server, 0.6) as stall:
                with pytest.raises(LedgerUnavailable, match="Timeout"):
                    op()  # the request reached the server; only the answer was lost
                stall.recv(16)  # the server is awake again
            errors: list[LedgerUnavailable] = []
            again = retry(op, errors)
            assert again.status in (ReserveStatus.DUP, SettleStatus.SETTLED)
        assert ledger.hold("r1").state is HoldState.COMMITTED
        org = next(line for line in ledger.lines() if line.key == ORG)
        assert (org.spent, org.held) == (30, 1)  # r1 charged once, warm-up still held
        kinds = [e.kind for e in ledger.events(0, 100) if e.rid == "r1"]
        assert kinds == ["reserve", "commit"]


def _hold_and_hang(url: str, conn: Connection) -> None:
    """A worker that takes holds and then hangs until it is killed."""
    ledger = Ledger.from_url(url)
    for i in range(3):
        ledger.reserve(chain(i, 10 + i), rid=f"release-{i}", ttl_s=30)
    for i in range(2):
        ledger.reserve(chain(i, 100), rid=f"charge-{i}", ttl_s=30, on_expiry=OnExpiry.CHARGE)
    conn.send("holding")
    conn.recv()  # never answered: SIGKILL ends this process


class _Later:
    """A test clock some way after the server's: the holds' deadlines have passed."""

    def __init__(self, base_ms: int) -> None:
        self.base_ms = base_ms

    def now_ms(self) -> int:
        return self.base_ms

    def monotonic(self) -> float:
        return time.monotonic()


def test_sigkilled_worker_holds_expire_per_policy() -> None:
    require_redis()
    prefix = new_prefix("kill")
    url = url_with(REDIS_URL, prefix=prefix)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    worker = ctx.Process(target=_hold_and_hang, args=(url, child))
    worker.start()
    try:
        assert parent.poll(30), "the worker never reported its holds"
        assert parent.recv() == "holding"
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(timeout=10)
        assert worker.exitcode == -signal.SIGKILL
        with Ledger.from_url(url) as ledger:
            assert len(ledger.holds()) == 5
            assert ledger.reap() == 0  # not yet due on the server's clock
            server_now = ledger.now_ms()
        # Any instance may reap; two of them split the work without settling twice.
        first = Ledger(RedisStorage.from_url(url, clock=_Later(server_now + 60_000)))
        second = Ledger(RedisStorage.from_url(url, clock=_Later(server_now + 60_000)))
        assert first.reap(limit=2) + second.reap() + first.reap() == 5
        assert ledger_states(first) == {
            **{f"release-{i}": HoldState.EXPIRED for i in range(3)},
            **{f"charge-{i}": HoldState.EXPIRED_CHARGE for i in range(2)},
        }
        org = next(line for line in first.lines() if line.key == ORG)
        assert (org.spent, org.held) == (200, 0)
        assert first.commit("release-0", {"cost": 5}).status is SettleStatus.SETTLED
        assert reconcile(first.lines(), first.events(0, 1000)) == []
        first.close()
        second.close()
    finally:
        if worker.is_alive():
            worker.kill()
        drop_prefix(prefix)


def ledger_states(ledger: Ledger) -> dict[str, HoldState]:
    rids = [f"release-{i}" for i in range(3)] + [f"charge-{i}" for i in range(2)]
    states = {}
    for rid in rids:
        record = ledger.hold(rid)
        assert record is not None
        states[rid] = record.state
    return states
