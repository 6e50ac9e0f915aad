"""Redis specifics the contract suite does not reach: exact big amounts, key layout, URL
options, WAITAOF, and the function library coming back after a server lost it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from execbudget.errors import ConfigurationError
from execbudget.ledger import (
    Ledger,
    LineKey,
    LineRequest,
    ReserveStatus,
    SettleStatus,
    _redis_sync,
    reconcile,
)
from execbudget.ledger._redis_common import Keys, parse_url
from execbudget.ledger.redis import RedisStorage

from ._redis_backend import REDIS_URL, drop_prefix, new_prefix, require_redis, url_with
from ._redis_server import PrivateRedis

BIG = 2**62


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    prefix = new_prefix("unit")
    yield prefix
    drop_prefix(prefix)


@pytest.mark.redis
def test_amounts_up_to_2_62_stay_exact(prefix: str) -> None:
    key = LineKey("org:big", "total", "cost")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        first = ledger.reserve([LineRequest(key, BIG, BIG - 3)])
        # A double would round 2**62 - 3 + 4 down to the limit and grant this one.
        _, outcome = ledger.try_reserve([LineRequest(key, BIG, 4)])
        assert outcome.status is ReserveStatus.DENIED
        assert (outcome.denial.held, outcome.denial.limit) == (BIG - 3, BIG)
        ledger.reserve([LineRequest(key, BIG, 3)])
        ledger.commit(first, {"cost": BIG - 7})
        (line,) = ledger.lines("org:big")
        assert (line.spent, line.held, line.limit) == (BIG - 7, 3, BIG)
        assert reconcile(ledger.lines(), ledger.events()) == []


@pytest.mark.redis
@pytest.mark.parametrize("limit", [2**53 - 1, 2**53, 2**53 + 1, 10**15])
def test_checks_are_exact_on_both_sides_of_2_53(prefix: str, limit: int) -> None:
    """Below 2^53 the Lua compares in doubles, from 2^53 up in limbs: both exact."""
    key = LineKey("org:edge", "total", "cost")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        ledger.reserve([LineRequest(key, limit, limit - 2)])
        ledger.reserve([LineRequest(key, limit, 1)])
        ledger.reserve([LineRequest(key, limit, 1)])  # held == limit: still within it
        _, outcome = ledger.try_reserve([LineRequest(key, limit, 1)])
        assert outcome.status is ReserveStatus.DENIED
        assert (outcome.denial.held, outcome.denial.limit) == (limit, limit)
        rid = ledger.reserve([LineRequest(key, limit, 0)])
        assert ledger.commit(rid, {"cost": 1}).status is SettleStatus.OVERRUN


@pytest.mark.redis
def test_a_huge_bound_is_exact_across_the_double_fast_path(prefix: str) -> None:
    """Against a bound from 2^53 up, sums below 2^53 skip the limbs; from 2^53 they do not."""
    key = LineKey("org:huge", "gateway", "calls")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        ledger.reserve([LineRequest(key, BIG, 2**53 - 2)])
        ledger.reserve([LineRequest(key, BIG, 1)])  # 2^53 - 1: the double path
        ledger.reserve([LineRequest(key, BIG, 1)])  # 2^53: the limbs from here
        ledger.reserve([LineRequest(key, BIG, BIG - 2**53 - 1)])  # one below the bound
        ledger.reserve([LineRequest(key, BIG, 1)])  # exactly the bound: still within it
        _, outcome = ledger.try_reserve([LineRequest(key, BIG, 1)])
        assert outcome.status is ReserveStatus.DENIED
        assert (outcome.denial.held, outcome.denial.limit) == (BIG, BIG)
        rid = ledger.reserve([LineRequest(LineKey("org:huge2", "t", "calls"), BIG, 5)])
        assert ledger.commit(rid, {"calls": 2**53 + 1}).status is SettleStatus.OVERRUN
        rid = ledger.reserve([LineRequest(LineKey("org:huge3", "t", "calls"), BIG, 5)])
        assert ledger.commit(rid, {"calls": 4}).status is SettleStatus.OK


@pytest.mark.redis
def test_works_without_hiredis(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without hiredis, commands are packed by redis-py's connection instead."""
    monkeypatch.setattr(_redis_sync, "PACK", None)
    key = LineKey("org:é/x", "total", "cost")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        rid = ledger.reserve([LineRequest(key, 100, 7)])
        assert ledger.commit(rid, {"cost": 5}).charged == {key: 5}
        assert [(s.key, s.spent, s.held) for s in ledger.lines()] == [(key, 5, 0)]


@pytest.mark.redis
def test_a_forked_child_does_not_share_the_parents_connection(prefix: str) -> None:
    key = LineKey("org:fork", "total", "cost")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        first = ledger.reserve([LineRequest(key, 100, 10)])  # opens the hot-path connection
        second = ledger.reserve([LineRequest(key, 100, 10)])
        pid = os.fork()
        if pid == 0:  # the child: settle one hold through the inherited ledger
            try:
                ok = ledger.commit(second, {"cost": 3}).status is SettleStatus.OK
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ledger.commit(first, {"cost": 5}).status is SettleStatus.OK
        assert [(s.spent, s.held) for s in ledger.lines()] == [(8, 0)]


@pytest.mark.redis
def test_every_key_of_a_ledger_is_in_one_cluster_slot(prefix: str) -> None:
    odd = LineKey("org:a/b%2F{c}*", "w/1", "cost")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix)) as ledger:
        rid = ledger.reserve([LineRequest(odd, 100, 5), LineRequest(LineKey("r", "t", "d"), 9, 1)])
        ledger.commit(rid, {"cost": 2})
        assert {line.key for line in ledger.lines()} == {odd, LineKey("r", "t", "d")}
        assert ledger.lines("org:a/b%") and not ledger.lines("org:a/c")
    with redis.Redis.from_url(REDIS_URL) as client:
        names = list(client.scan_iter(match="{" + prefix + "}*"))
    assert len(names) >= 5  # two lines, the hold, the event stream, the seq counter
    assert len({key_slot(name) for name in names}) == 1


def test_url_options() -> None:
    options = parse_url("rediss://u:p@h:1/2?prefix=x:&wait_aof=1&socket_timeout=3")
    assert (options.prefix, options.wait_aof) == ("x:", True)
    assert options.driver_url == "rediss://u:p@h:1/2?socket_timeout=3"
    for bad in ("redis://h?prefx=1", "redis://h?prefix={x}", "redis://h?wait_aof=maybe"):
        with pytest.raises(ConfigurationError):
            parse_url(bad)
    assert Keys("p:").parse_line(Keys("p:").line(LineKey("a/%b", "w", "d"))) == LineKey(
        "a/%b", "w", "d"
    )


@pytest.mark.redis
def test_wait_aof_is_refused_clearly_before_redis_7_2(prefix: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        version = tuple(int(p) for p in str(client.info("server")["redis_version"]).split(".")[:2])
    if version >= (7, 2):
        pytest.skip("this server has WAITAOF; the AOF path is covered by the fault tests")
    with Ledger.from_url(url_with(REDIS_URL, prefix=prefix, wait_aof="1")) as ledger:
        with pytest.raises(ConfigurationError, match=r"wait_aof=1 needs Redis ≥ 7\.2"):
            ledger.reserve([LineRequest(LineKey("s", "w", "d"), 10, 1)])


@pytest.mark.redis
@pytest.mark.slow
def test_library_is_loaded_again_after_a_server_lost_it(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "r", appendonly=False)
    server.start()
    try:
        storage = RedisStorage.from_url(server.url)
        with Ledger(storage) as ledger:
            ledger.reserve([LineRequest(LineKey("s", "w", "d"), 10, 1)])
            server.restart()  # no persistence: data and functions are gone
            ledger.reserve([LineRequest(LineKey("s", "w", "d"), 10, 1)])
            assert [line.held for line in ledger.lines()] == [1]
    finally:
        server.stop()


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(prefix: str) -> None:
    """200 concurrent callers on a 4-connection pool: all served, none 'unavailable'."""
    from execbudget.ledger import AsyncLedger, LineKey, LineRequest

    ledger = AsyncLedger.from_url(url_with(REDIS_URL, prefix=prefix, max_connections="4"))
    line = [LineRequest(LineKey("org:burst", "total", "calls"), 1_000, 1)]
    try:
        rids = await asyncio.gather(*(ledger.reserve(line) for _ in range(200)))
        assert len(set(rids)) == 200
        assert [(s.held, s.spent) for s in await ledger.lines("org:burst")] == [(200, 0)]
    finally:
        await ledger.aclose()
