"""
The PostgreSQL storage's hot path: reserve and settle on a connection of their own, as
statements prepared once and sent through libpq directly. What must hold: an error
answer leaves that connection usable, a connection the server dropped is replaced and
the call runs once more, concurrent callers fall back to the pool with the same books,
and the async face behaves the same.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest

from execbudget.ledger import (
    AsyncLedger,
    Ledger,
    LineKey,
    LineRequest,
    OnExpiry,
    ReserveStatus,
    reconcile,
)
from execbudget.ledger import _pg_common as pg
from execbudget.ledger.postgres import PostgresStorage

from ._pg_backend import base_url, drop_schema, new_schema, require_postgres, url_with

pytestmark = [pytest.mark.postgres]

ORG = LineKey("org:hot", "total", "cost")


def chain(worker: int, amount: int = 7, limit: int = 10**12) -> list[LineRequest]:
    return [
        LineRequest(ORG, limit, amount),
        LineRequest(LineKey(f"run:r{worker}", "total", "cost"), 10**12, amount),
    ]


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    name = new_schema("hot")
    yield name
    drop_schema(name)


def _hot_pid(storage: PostgresStorage) -> int:
    (hot,) = storage._hot
    return int(hot.conn.info.backend_pid)


def test_numbered_and_wire() -> None:
    assert pg.numbered("SELECT f(%s, %s::text[])") == "SELECT f($1, $2::text[])"
    assert pg.wire(["a", 5, None, True, False, "{1,2}"]) == [b"a", b"5", None, b"t", b"f", b"{1,2}"]


def test_an_error_answer_keeps_the_hot_connection(schema: str) -> None:
    storage = PostgresStorage.from_url(url_with(schema=schema))
    try:
        ledger = Ledger(storage)
        ledger.commit(ledger.reserve(chain(0)), {"cost": 5})
        pid = _hot_pid(storage)
        bad = list(pg.reserve_args("r-bad", chain(0), 1000, OnExpiry.RELEASE, False, None))
        bad[4] = "{not-a-number}"  # the limits array
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            storage._call(pg.RESERVE_STATEMENT, storage.sql.reserve, bad)
        assert _hot_pid(storage) == pid
        ledger.commit(ledger.reserve(chain(0)), {"cost": 5})
        assert _hot_pid(storage) == pid
        (org,) = ledger.read_lines([ORG])
        assert org is not None and org.spent == 10
    finally:
        storage.close()


def test_a_dropped_connection_is_replaced_and_the_call_runs_once(schema: str) -> None:
    storage = PostgresStorage.from_url(url_with(schema=schema))
    try:
        ledger = Ledger(storage)
        ledger.commit(ledger.reserve(chain(0)), {"cost": 5})
        pid = _hot_pid(storage)
        with psycopg.connect(base_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        rid = ledger.reserve(chain(0))  # the dead connection fails; a new one runs it
        assert _hot_pid(storage) != pid
        ledger.commit(rid, {"cost": 5})
        (org,) = ledger.read_lines([ORG])
        assert org is not None and org.spent == 10 and org.held == 0
    finally:
        storage.close()


def test_threads_share_one_storage_without_overshoot(schema: str) -> None:
    limit = 7 * 150
    storage = PostgresStorage.from_url(url_with(schema=schema, pool_max="4"))
    ledger = Ledger(storage)
    granted: list[int] = []
    failures: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            for _ in range(60):
                rid, outcome = ledger.try_reserve(chain(worker, limit=limit))
                if outcome.status is ReserveStatus.OK:
                    granted.append(7)
                    ledger.commit(rid, {"cost": 7})
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not failures, failures
        (org,) = ledger.read_lines([ORG])
        assert org is not None
        assert org.spent == sum(granted) == limit
        assert org.held == 0
        assert reconcile(ledger.lines(), ledger.events(0, 10**6)) == []
    finally:
        storage.close()


def test_async_face_uses_the_hot_path(schema: str) -> None:
    async def main() -> None:
        async with AsyncLedger.from_url(url_with(schema=schema)) as ledger:
            rids = await asyncio.gather(*(ledger.reserve(chain(w)) for w in range(8)))
            await asyncio.gather(*(ledger.commit(rid, {"cost": 5}) for rid in rids))
            (org,) = await ledger.read_lines([ORG])
            assert org is not None and org.spent == 40 and org.held == 0

    asyncio.run(main())


def test_prepare_threshold_none_prepares_nothing(schema: str) -> None:
    """Behind PgBouncer in transaction mode (< 1.21) no named statement may be made."""
    storage = PostgresStorage.from_url(url_with(schema=schema, prepare_threshold="none"))
    try:
        ledger = Ledger(storage)
        for _ in range(3):
            ledger.commit(ledger.reserve(chain(0)), {"cost": 5})
        (hot,) = storage._hot
        cur = hot.conn.execute("SELECT count(*) FROM pg_prepared_statements", prepare=False)
        assert cur.fetchone() == (0,)
        (org,) = ledger.read_lines([ORG])
        assert org is not None and org.spent == 15 and org.held == 0
    finally:
        storage.close()
