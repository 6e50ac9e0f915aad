"""
What the contract suite cannot see about the PostgreSQL backend: migrations (versioned,
idempotent, race-safe, refusable), URL options, the server-side idempotency of a reserve
retried while its first attempt is still in flight, and lock ordering under reversed
and freshly created chains.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from execbudget.errors import ConfigurationError
from execbudget.ledger import (
    AsyncLedger,
    Ledger,
    LineKey,
    LineRequest,
    ReserveStatus,
    reconcile,
)
from execbudget.ledger._pg_common import MIGRATIONS, quote_schema, render
from execbudget.ledger.postgres import LATEST, PostgresStorage, migrate, migrate_command

from ._pg_backend import POSTGRES_URL, base_url, drop_schema, new_schema, require_postgres, url_with

pytestmark = [pytest.mark.postgres]

ALL = [m.version for m in MIGRATIONS]
A = LineKey("org:a", "total", "cost")
B = LineKey("team:b", "total", "cost")


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    name = new_schema("be")
    yield name
    drop_schema(name)


def _sql(query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(base_url(), autocommit=True) as conn:
        cur = conn.execute(query.encode(), params or None)
        return cur.fetchall() if cur.description else []


# -- migrations ------------------------------------------------------------------------------
def test_migrate_is_versioned_and_idempotent(schema: str) -> None:
    url = url_with(schema=schema)
    assert migrate(url) == ALL
    assert migrate(url) == []
    rows = _sql(f"SELECT version FROM {schema}.eb_migrations ORDER BY version")
    assert rows == [(v,) for v in ALL]
    assert ALL[-1] == LATEST


def test_holds_made_before_an_upgrade_settle_after_it(schema: str) -> None:
    """A schema at 0001 with a hold in flight: migrating to the latest keeps its books."""
    first = MIGRATIONS[0]
    _sql(f"CREATE SCHEMA {quote_schema(schema)}")
    _sql(render(first, schema))
    _sql(
        f"CREATE TABLE {quote_schema(schema)}.eb_migrations (version text PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    _sql(f"INSERT INTO {schema}.eb_migrations (version, name) VALUES (%s, %s)", first.version, "x")
    url = url_with(schema=schema)
    with Ledger(PostgresStorage.from_url(url_with(schema=schema, migrate="off"))) as old:
        with pytest.raises(ConfigurationError):  # 0001 only: this code needs the rest
            old.reserve([LineRequest(A, 100, 10)])
    _sql(
        f"SELECT * FROM {schema}.eb_reserve('before', ARRAY['org:a'], ARRAY['total'],"
        " ARRAY['cost'], ARRAY[100]::bigint[], ARRAY[10]::bigint[], ARRAY[NULL]::bigint[],"
        " 60000, 'release', false, NULL)"
    )
    assert migrate(url) == ALL[1:]
    with Ledger.from_url(url) as ledger:
        assert ledger.commit("before", {"cost": 4}).charged == {A: 4}
        ledger.commit(ledger.reserve([LineRequest(A, 100, 90)]), {"cost": 90})
        assert [(s.spent, s.held) for s in ledger.lines()] == [(94, 0)]
        assert reconcile(ledger.lines(), ledger.events()) == []


def test_racing_migrators_apply_each_version_once(schema: str) -> None:
    url = url_with(schema=schema)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], [], [], ALL]


def test_migrate_off_refuses_an_unmigrated_schema(schema: str) -> None:
    url = url_with(schema=schema, migrate="off")
    with pytest.raises(ConfigurationError, match="execbudget ledger migrate"):
        Ledger.from_url(url).lines()
    migrate(url)
    with Ledger.from_url(url) as ledger:
        assert ledger.lines() == []


def test_a_schema_newer_than_the_code_is_refused(schema: str) -> None:
    migrate(url_with(schema=schema))
    _sql(f"INSERT INTO {schema}.eb_migrations (version, name) VALUES ('9999', 'future')")
    with pytest.raises(ConfigurationError, match="upgrade execbudget"):
        Ledger.from_url(url_with(schema=schema)).lines()


def test_migrate_command_reports(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_with(schema=schema)
    assert migrate_command(url) == 0
    assert f"applied {', '.join(ALL)}" in capsys.readouterr().out
    assert migrate_command(url) == 0
    assert "up to date" in capsys.readouterr().out
    assert migrate_command(url_with(schema="bad-name")) == 2
    assert migrate_command("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2") == 1
    assert "migration failed" in capsys.readouterr().out


# -- URL options -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"schema": "1abc"},
        {"schema": "a;drop"},
        {"synchronous_commit": "sometimes"},
        {"pool_min": "5", "pool_max": "2"},
        {"timeout": "0"},
        {"pool_max": "many"},
        {"migrate": "maybe"},
        {"no_such_libpq_option": "1"},
    ],
)
def test_bad_url_options_are_configuration_errors(options: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStorage.from_url(url_with(POSTGRES_URL, **options))


def test_both_schemes_and_faces_come_from_the_registry(schema: str) -> None:
    url = url_with(schema=schema).replace("postgresql://", "postgres://", 1)
    with Ledger.from_url(url) as ledger:
        assert isinstance(ledger.storage, PostgresStorage)
        ledger.reserve([LineRequest(A, 10, 1)])

    async def async_face() -> int:
        async with AsyncLedger.from_url(url) as ledger:
            return len(await ledger.lines())

    assert asyncio.run(async_face()) == 1


def test_synchronous_commit_option_reaches_every_connection(schema: str) -> None:
    storage = PostgresStorage.from_url(url_with(schema=schema, synchronous_commit="off"))
    try:
        storage.lines()
        with storage._pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
            level = conn.execute("SHOW default_transaction_isolation").fetchone()
        assert row == ("off",) and level == ("read committed",)
    finally:
        storage.close()


# -- concurrency details ---------------------------------------------------------------------
def _waiting_on_locks(schema: str) -> int:
    rows = _sql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        f"%{schema}%",
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def test_a_reserve_retried_while_the_first_is_in_flight_holds_once(schema: str) -> None:
    url = url_with(schema=schema)
    ledger = Ledger.from_url(url)
    ledger.commit(ledger.reserve([LineRequest(A, 100, 1)]), {"cost": 1})
    outcomes: list[ReserveStatus] = []

    def reserve() -> None:
        outcomes.append(ledger.try_reserve([LineRequest(A, 100, 10)], rid="same")[1].status)

    blocker = psycopg.connect(base_url())
    try:
        # Hold the line's lock, so the first reserve waits on it after inserting its hold
        # row, and the retry waits on that row.
        blocker.execute(
            sql.SQL("SELECT 1 FROM {}.eb_line FOR UPDATE").format(sql.Identifier(schema))
        )
        threads = [threading.Thread(target=reserve) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while _waiting_on_locks(schema) < 2:
            assert time.monotonic() < deadline, "the two reserves never queued up"
            time.sleep(0.01)  # polling pg_stat_activity, bounded by the deadline
    finally:
        blocker.rollback()
        blocker.close()
    for t in threads:
        t.join(timeout=20)
    assert sorted(outcomes) == [ReserveStatus.DUP, ReserveStatus.OK]
    assert {line.key: line.held for line in ledger.lines()}[A] == 10
    assert [e.kind for e in ledger.events() if e.rid == "same"] == ["reserve"]
    ledger.close()


def test_reversed_and_fresh_chains_never_deadlock(schema: str) -> None:
    ledger = Ledger.from_url(url_with(schema=schema, pool_max="8"))
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            for i in range(40):
                fresh = LineKey(f"run:{i % 5}", "total", "cost")  # created by whoever is first
                lines = [LineRequest(A, 10**9, 1), LineRequest(B, 10**9, 1)]
                lines.append(LineRequest(fresh, 10**9, 1))
                if w % 2:
                    lines.reverse()
                ledger.commit(ledger.reserve(lines), {"cost": 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    lines = ledger.lines()
    assert {line.key: line.spent for line in lines}[A] == 8 * 40
    assert reconcile(lines, ledger.events(0, 10**6)) == []
    ledger.close()


def test_a_denied_reserve_creates_no_line(schema: str) -> None:
    with Ledger.from_url(url_with(schema=schema)) as ledger:
        _, outcome = ledger.try_reserve([LineRequest(A, 100, 1), LineRequest(B, 5, 6)])
        assert outcome.status is ReserveStatus.DENIED and outcome.denial is not None
        assert outcome.denial.key == B
        assert ledger.lines() == [] and ledger.events() == []


def test_a_cancelled_async_reserve_leaves_the_pool_usable_and_a_retry_holds_once(
    schema: str,
) -> None:
    """A deadline cancels an awaiting reserve; the same rid retried later holds once."""
    url = url_with(schema=schema, pool_max="1")

    async def scenario() -> list[int]:
        async with AsyncLedger.from_url(url) as ledger:
            await ledger.commit(await ledger.reserve([LineRequest(A, 100, 1)]), {"cost": 1})
            blocker = await psycopg.AsyncConnection.connect(base_url())
            await blocker.execute(
                sql.SQL("SELECT 1 FROM {}.eb_line FOR UPDATE").format(sql.Identifier(schema))
            )
            task = asyncio.create_task(ledger.try_reserve([LineRequest(A, 100, 10)], rid="x"))
            deadline = time.monotonic() + 20
            while _waiting_on_locks(schema) < 1:
                assert time.monotonic() < deadline, "the reserve never reached the lock"
                await asyncio.sleep(0.01)  # polling, bounded by the deadline
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await blocker.rollback()
            await blocker.close()
            _, again = await ledger.try_reserve([LineRequest(A, 100, 10)], rid="x")
            assert again.status in (ReserveStatus.OK, ReserveStatus.DUP)
            lines = await ledger.lines()
            return [line.held for line in lines]

    assert asyncio.run(scenario()) == [10]


def test_a_reserve_denied_under_the_lock_undoes_everything_it_wrote(schema: str) -> None:
    """
    The unlocked check passes, then a concurrent reserve commits first: the check under
    the lock denies, and the hold row, its event and the line it created are gone.
    """
    url = url_with(schema=schema)
    ledger = Ledger.from_url(url)
    ledger.commit(ledger.reserve([LineRequest(A, 100, 1)]), {"cost": 1})  # migrated, A exists
    fresh = LineKey("run:fresh", "total", "cost")
    outcomes: list[object] = []
    first = psycopg.connect(base_url())  # a transaction left open: its locks stay held
    try:
        first.execute(
            sql.SQL(
                "SELECT status FROM {}.eb_reserve('first', ARRAY['org:a'], ARRAY['total'],"
                " ARRAY['cost'], ARRAY[100]::bigint[], ARRAY[50]::bigint[],"
                " ARRAY[NULL]::bigint[], 60000, 'release', false, NULL)"
            ).format(sql.Identifier(schema))
        )
        late = threading.Thread(
            target=lambda: outcomes.append(
                ledger.try_reserve([LineRequest(A, 100, 60), LineRequest(fresh, 100, 60)])[1]
            )
        )
        late.start()
        deadline = time.monotonic() + 20
        while _waiting_on_locks(schema) < 1:
            assert time.monotonic() < deadline, "the late reserve never reached the lock"
            time.sleep(0.01)  # polling pg_stat_activity, bounded by the deadline
        first.commit()
    finally:
        first.close()
    late.join(timeout=20)
    (outcome,) = outcomes
    assert outcome.status is ReserveStatus.DENIED  # type: ignore[attr-defined]
    denial = outcome.denial  # type: ignore[attr-defined]
    assert (denial.key, denial.spent, denial.held, denial.requested) == (A, 1, 50, 60)
    lines = ledger.lines()
    assert [line.key for line in lines] == [A]  # the line it created is gone
    assert [e.rid for e in ledger.events() if e.kind == "reserve"][-1] == "first"
    assert {h.rid for h in ledger.holds()} == {"first"}
    assert reconcile(lines, ledger.events()) == []
    ledger.close()
