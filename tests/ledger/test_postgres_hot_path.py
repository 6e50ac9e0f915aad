"""
The PostgreSQL storage's hot path: reserve and settle on a connection of their own, as
statements prepared once and sent through libpq directly. What must hold: an error
answer leaves that connection usable, a connection the server dropped is replaced and
the call runs once more, concurrent callers fall back to the pool with the same books,
and the async face behaves the same. And the one extra connection stays one, and
closed with the storage: a call interrupted while it is being made leaves the hot path
on, threads racing to make it make one, and a call in flight across close() closes it
when it is done instead of leaving it open.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

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
from execbudget.ledger.postgres import AsyncPostgresStorage, PostgresStorage

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


def _bad_settle_args() -> tuple[object, ...]:
    """Settle arguments the server refuses (an error answer; the connection stays in step)."""
    return ("r-none", "commit", "{cost}", "{not-a-number}", None)


def test_a_call_cancelled_while_connecting_leaves_the_hot_path_on(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = psycopg.AsyncConnection.connect

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:  # a slow TCP/TLS handshake
        await asyncio.sleep(0.3)
        return await real_connect(*args, **kwargs)

    async def main() -> None:
        storage = AsyncPostgresStorage.from_url(url_with(schema=schema))
        try:
            await storage.lines()  # pool open, schema ready
            with monkeypatch.context() as patch:
                patch.setattr(psycopg.AsyncConnection, "connect", slow_connect)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(storage.reserve("r-cut", chain(0), 60_000), 0.05)
            assert not storage._hot_made
            for i in range(3):
                await storage.reserve(f"r{i}", chain(0), 60_000)
            assert len(storage._hot) == 1  # the hot path is on again
        finally:
            await storage.aclose()

    asyncio.run(main())


def test_a_call_interrupted_while_connecting_leaves_the_hot_path_on(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    storage = PostgresStorage.from_url(url_with(schema=schema))
    try:
        storage.lines()  # pool open, schema ready
        with monkeypatch.context() as patch:
            patch.setattr(psycopg.Connection, "connect", interrupted)
            with pytest.raises(KeyboardInterrupt):
                storage.reserve("r-cut", chain(0), 60_000)
        assert not storage._hot_made
        storage.reserve("r1", chain(0), 60_000)
        assert len(storage._hot) == 1
    finally:
        storage.close()


class _HookedClosed(PostgresStorage):
    """
    ``_closed`` with a hook run at each read, after the value is read: what another thread
    does between a read and the decision taken on it (close() running, a second thread
    reaching the same point) is then done there on purpose, instead of by luck.
    """

    hook: Callable[[], None] | None = None

    @property  # type: ignore[override]
    def _closed(self) -> bool:
        value = bool(self.__dict__.get("_closed_value", False))
        if self.hook is not None:
            self.hook()
        return value

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self.__dict__["_closed_value"] = value


def test_threads_racing_to_make_the_hot_connection_make_one(schema: str) -> None:
    storage = _HookedClosed.from_url(url_with(schema=schema))
    assert isinstance(storage, _HookedClosed)
    made: list[Any] = []
    failures: list[BaseException] = []
    racers: list[threading.Thread] = []
    both_looked = threading.Barrier(2, timeout=10)

    def hook() -> None:
        if threading.current_thread() in racers:
            both_looked.wait()  # each racer has looked before either goes on

    def race() -> None:
        try:
            made.append(storage._new_hot())
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    try:
        storage.lines()  # pool open, schema ready
        storage.hook = hook
        racers.extend(threading.Thread(target=race) for _ in range(2))
        for t in racers:
            t.start()
        for t in racers:
            t.join(timeout=30)
        storage.hook = None
        assert not failures, failures
        hot = [each for each in made if each is not None]
        assert len(hot) == 1, f"{len(hot)} hot connections made; one is allowed"
        for each in hot:
            each.conn.close()
    finally:
        storage.close()


def test_a_result_put_back_as_close_runs_is_closed(schema: str) -> None:
    """A successful call reads "not closed", then close() runs before it puts back."""
    storage = _HookedClosed.from_url(url_with(schema=schema))
    assert isinstance(storage, _HookedClosed)
    storage.reserve("r0", chain(0), 60_000)
    (hot,) = storage._hot
    try:
        real_wait = hot.conn.wait
        answered = threading.Event()

        def wait(gen: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return real_wait(gen, *args, **kwargs)
            finally:
                answered.set()

        def hook() -> None:
            if answered.is_set():
                storage.hook = None
                storage.close()  # as if another thread closed it just after this read

        hot.conn.wait = wait  # type: ignore[method-assign]
        storage.hook = hook
        storage.reserve("r1", chain(0), 60_000)
        assert answered.is_set()
        assert storage._hot == [] and hot.conn.closed
    finally:
        storage.hook = None
        storage.close()
        hot.conn.close()


def test_an_error_answer_after_close_closes_the_hot_connection(schema: str) -> None:
    storage = PostgresStorage.from_url(url_with(schema=schema))
    storage.reserve("r0", chain(0), 60_000)
    (hot,) = storage._hot
    try:
        real_wait = hot.conn.wait
        sent, go_on = threading.Event(), threading.Event()

        def wait(gen: Any, *args: Any, **kwargs: Any) -> Any:
            sent.set()
            go_on.wait(10)
            return real_wait(gen, *args, **kwargs)

        hot.conn.wait = wait  # type: ignore[method-assign]
        raised: list[BaseException] = []

        def bad() -> None:
            try:
                storage._call(pg.SETTLE_STATEMENT, storage.sql.settle, _bad_settle_args())
            except BaseException as exc:
                raised.append(exc)

        caller = threading.Thread(target=bad)
        caller.start()
        assert sent.wait(10)
        storage.close()  # while the call has the hot connection
        go_on.set()
        caller.join(30)
        assert [type(exc) for exc in raised] == [psycopg.errors.InvalidTextRepresentation]
        assert storage._hot == [] and hot.conn.closed
    finally:
        storage.close()
        hot.conn.close()


def test_async_an_error_answer_after_close_closes_the_hot_connection(schema: str) -> None:
    async def main() -> None:
        storage = AsyncPostgresStorage.from_url(url_with(schema=schema))
        await storage.reserve("r0", chain(0), 60_000)
        (hot,) = storage._hot
        try:
            real_wait = hot.conn.wait
            sent, go_on = asyncio.Event(), asyncio.Event()

            async def wait(gen: Any, *args: Any, **kwargs: Any) -> Any:
                sent.set()
                await go_on.wait()
                return await real_wait(gen, *args, **kwargs)

            hot.conn.wait = wait  # type: ignore[method-assign]
            call = asyncio.ensure_future(
                storage._call(pg.SETTLE_STATEMENT, storage.sql.settle, _bad_settle_args())
            )
            await asyncio.wait_for(sent.wait(), 10)
            await storage.aclose()  # while the call has the hot connection
            go_on.set()
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                await call
            assert storage._hot == [] and hot.conn.closed
        finally:
            await storage.aclose()
            await hot.conn.close()

    asyncio.run(main())
