"""
The Redis ledger's hot-path connection (``_redis_lean``): who gets it, what it does when it
is lost, cancelled or told to authenticate, and that it never hands a caller another's reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from execbudget.ledger import AsyncLedger, Ledger, LineKey, LineRequest, ReserveStatus
from execbudget.ledger._redis_async import AsyncRedisStorage
from execbudget.ledger._redis_lean import AsyncLean, SyncLean, lean_settings
from execbudget.ledger.redis import RedisStorage

from ._redis_backend import REDIS_URL, drop_prefix, new_prefix, require_redis, url_with
from ._redis_server import PrivateRedis

pytestmark = pytest.mark.redis
KEY = LineKey("org:lean", "total", "cost")


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    prefix = new_prefix("lean")
    yield prefix
    drop_prefix(prefix)


def _lean(storage: Any) -> Any:
    (conn,) = storage._spare  # the hot-path connection, free between calls
    return conn


def _kill(conn: SyncLean | AsyncLean) -> None:
    """Close the connection from the server's side (CLIENT KILL its address)."""
    if isinstance(conn, SyncLean):
        assert conn._sock is not None
        host, port = conn._sock.getsockname()[:2]
    else:
        assert conn._transport is not None
        host, port = conn._transport.get_extra_info("sockname")[:2]
    with redis.Redis.from_url(REDIS_URL) as admin:
        assert admin.client_kill(f"{host}:{port}")


def test_eligible_urls_only() -> None:
    plain = RedisStorage.from_url("redis://127.0.0.1:6379/2?socket_timeout=0.5")
    settings = lean_settings(plain._pool, redis.Connection)
    assert settings is not None and (settings.db, settings.timeout_s) == (2, 0.5)
    tls = RedisStorage.from_url("rediss://127.0.0.1:6379/0")
    assert lean_settings(tls._pool, redis.Connection) is None  # TLS: redis-py throughout
    # an async pool is not a sync face's pool
    assert lean_settings(AsyncRedisStorage.from_url(REDIS_URL)._pool, redis.Connection) is None


def test_a_lost_connection_is_replaced_and_the_call_still_lands(prefix: str) -> None:
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        first = ledger.reserve([LineRequest(KEY, 100, 10)])
        lost = _lean(ledger.storage)
        _kill(lost)
        # the lean call fails, the pool's connection takes the same call
        assert ledger.commit(first, {"cost": 4}).charged == {KEY: 4}
        ledger.reserve([LineRequest(KEY, 100, 1)])  # a new hot-path connection
        assert _lean(ledger.storage) is not lost
        assert [(s.spent, s.held) for s in ledger.lines()] == [(4, 1)]


async def test_async_lost_connection_is_replaced(prefix: str) -> None:
    ledger = AsyncLedger.from_url(url_with(REDIS_URL, prefix=prefix))
    try:
        rid = await ledger.reserve([LineRequest(KEY, 100, 10)])
        lost = _lean(ledger.storage)
        _kill(lost)
        assert (await ledger.commit(rid, {"cost": 3})).charged == {KEY: 3}
        await ledger.reserve([LineRequest(KEY, 100, 1)])
        assert _lean(ledger.storage) is not lost
        assert [(s.spent, s.held) for s in await ledger.lines()] == [(3, 1)]
    finally:
        await ledger.aclose()


async def test_a_caller_cancelled_while_it_connects_does_not_disable_it(prefix: str) -> None:
    """The first caller opens the connection; cancelled meanwhile, the next caller opens it."""
    ledger = AsyncLedger.from_url(url_with(REDIS_URL, prefix=prefix))
    try:
        first = asyncio.ensure_future(ledger.try_reserve([LineRequest(KEY, 100, 1)]))
        await asyncio.sleep(0)  # it is connecting now
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await ledger.try_reserve([LineRequest(KEY, 100, 1)])
        assert isinstance(_lean(ledger.storage), AsyncLean)
    finally:
        await ledger.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_connection_is_used_and_kept_on_either_event_loop(prefix: str, loop: str) -> None:
    """The gateway runs on uvloop, whose transports are not asyncio.Transport subclasses."""

    async def scenario() -> list[Any]:
        ledger = AsyncLedger.from_url(url_with(REDIS_URL, prefix=prefix))
        try:
            rid = await ledger.reserve([LineRequest(KEY, 100, 10)])
            first = _lean(ledger.storage)
            await ledger.commit(rid, {"cost": 2})
            return [first, _lean(ledger.storage), await ledger.lines()]
        finally:
            await ledger.aclose()

    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        first, then, lines = runner.run(scenario())
    assert isinstance(first, AsyncLean) and then is first
    assert [(s.spent, s.held) for s in lines] == [(2, 0)]
    assert first._lost is not None  # closed with the ledger


async def test_a_cancelled_caller_leaves_the_connection_in_step(tmp_path: Path) -> None:
    """
    A reserve cancelled after it was written still lands; the next caller on the same
    connection gets its own reply, not the cancelled one's.
    """
    server = PrivateRedis(tmp_path / "r", appendonly=False)
    server.args += ["--enable-debug-command", "local"]
    server.start()
    ledger = AsyncLedger.from_url(url_with(server.url, prefix="cancel:"))
    try:
        await ledger.reserve([LineRequest(KEY, 100, 1)])  # opens the connection
        conn = _lean(ledger.storage)
        with redis.Redis(port=server.port) as admin:
            stall = asyncio.get_running_loop().run_in_executor(
                None, lambda: admin.execute_command("DEBUG", "SLEEP", "0.3")
            )
            await asyncio.sleep(0.1)  # the server is asleep: replies wait
            cancelled = asyncio.ensure_future(
                ledger.try_reserve([LineRequest(KEY, 100, 10)], rid="cancelled")
            )
            await asyncio.sleep(0.01)  # written, waiting for its reply
            assert not cancelled.done()
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert _lean(ledger.storage) is conn  # still in step: kept
            _, outcome = await ledger.try_reserve([LineRequest(KEY, 100, 20)], rid="next")
            await stall
        assert outcome.status is ReserveStatus.OK
        assert outcome.books is not None and outcome.books[0].held == 1 + 10 + 20
        assert {h.rid for h in await ledger.holds()} >= {"cancelled", "next"}
    finally:
        await ledger.aclose()
        server.stop()


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_the_connection_authenticates_and_selects_its_db(tmp_path: Path, face: str) -> None:
    server = PrivateRedis(tmp_path / "r", appendonly=False)
    server.start()
    try:
        with redis.Redis(port=server.port) as admin:
            admin.config_set("requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3?prefix=auth:"
        if face == "sync":
            with Ledger.from_url(url) as ledger:
                ledger.reserve([LineRequest(KEY, 100, 5)])
                assert isinstance(_lean(ledger.storage), SyncLean)
        else:
            aledger = AsyncLedger.from_url(url)
            try:
                await aledger.reserve([LineRequest(KEY, 100, 5)])
                assert isinstance(_lean(aledger.storage), AsyncLean)
            finally:
                await aledger.aclose()
        with redis.Redis(port=server.port, password="s3cret", db=3) as db3:
            assert db3.hget("{auth:}l:org:lean/total/cost", "hd") == b"5"
        with redis.Redis(port=server.port, password="s3cret", db=0) as db0:
            assert db0.dbsize() == 0
    finally:
        server.stop()
