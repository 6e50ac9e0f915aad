"""
Group commit: operations queued by several threads share one transaction, each answers
its own caller, and a refused or failing operation undoes only its own writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from execbudget.ledger import Ledger, LineKey, LineRequest
from execbudget.ledger._sqlite_batch import GroupCommitter, Undo


def _connect(path: Path, statements: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
    conn.set_trace_callback(statements.append)
    return conn


def test_queued_operations_share_one_commit_and_keep_their_own_outcomes(tmp_path: Path) -> None:
    statements: list[str] = []
    committer = GroupCommitter(lambda: lambda: _connect(tmp_path / "g.db", statements), "g")
    first_running, let_first_finish = threading.Event(), threading.Event()

    def slow_insert(conn: sqlite3.Connection, v: int) -> int:
        first_running.set()
        let_first_finish.wait(timeout=30)
        conn.execute("INSERT INTO t VALUES (?)", (v,))
        return v

    def insert(conn: sqlite3.Connection, v: int) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (v,))
        if v == 13:
            raise Undo(-13)  # refused: its row must not stay
        if v == 14:
            raise ValueError("op 14 failed")  # failed: its row must not stay either
        return v

    results: dict[int, object] = {}

    def call(fn: object, v: int) -> None:
        try:
            results[v] = committer.run(fn, v)  # type: ignore[arg-type]
        except ValueError as exc:
            results[v] = str(exc)

    head = threading.Thread(target=call, args=(slow_insert, 0))
    head.start()
    assert first_running.wait(timeout=30)
    rest = [threading.Thread(target=call, args=(insert, v)) for v in range(10, 16)]
    for t in rest:
        t.start()
    deadline = time.monotonic() + 30
    while len(committer._pending) < len(rest):  # all queued behind the slow one
        assert time.monotonic() < deadline, "the callers never queued"
        threading.Event().wait(0.001)
    let_first_finish.set()
    for t in (head, *rest):
        t.join(timeout=30)
    committer.close()

    assert results == {0: 0, 10: 10, 11: 11, 12: 12, 13: -13, 14: "op 14 failed", 15: 15}
    with sqlite3.connect(tmp_path / "g.db") as conn:
        rows = sorted(v for (v,) in conn.execute("SELECT v FROM t"))
    assert rows == [0, 10, 11, 12, 15]
    # the slow one committed alone; the six queued behind it shared one transaction
    assert statements.count("COMMIT") == 2
    assert statements.count("SAVEPOINT eb_op") == 6


def test_a_ledger_with_group_commit_books_every_thread_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db?synchronous=FULL&group_commit=1"
    org = LineKey("org:o", "total", "cost")
    ledger = Ledger.from_url(url)

    def worker() -> None:
        for _ in range(50):
            rid = ledger.reserve([LineRequest(org, limit=10_000, amount=10)])
            ledger.commit(rid, {"cost": 7})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (line,) = ledger.lines()
    assert (line.spent, line.held) == (8 * 50 * 7, 0)
    ledger.close()
    with pytest.raises(Exception, match="closed"):
        ledger.reserve([LineRequest(org, limit=10_000, amount=10)])


def test_group_commit_flag_is_validated(tmp_path: Path) -> None:
    from execbudget import ConfigurationError

    with pytest.raises(ConfigurationError, match="group_commit='yes' must be 1, 0, true or false"):
        Ledger.from_url(f"sqlite:///{tmp_path}/x.db?group_commit=yes")


def test_group_commit_refuses_an_in_memory_database() -> None:
    from execbudget import ConfigurationError
    from execbudget.ledger import SQLiteStorage

    with pytest.raises(ConfigurationError, match="group_commit needs a file"):
        SQLiteStorage(":memory:", group_commit=True)


def test_a_dropped_storage_is_collected_and_its_writer_stops(tmp_path: Path) -> None:
    import gc
    import weakref

    from execbudget.ledger import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "d.db", group_commit=True)
    org = LineKey("org:o", "total", "cost")
    storage.reserve("r1", [LineRequest(org, limit=10, amount=1)], 60_000)
    committer = storage._committer
    assert committer is not None and committer._thread is not None
    writer = committer._thread
    alive = weakref.ref(storage)
    del storage
    gc.collect()
    assert alive() is None, "the writer thread kept the storage alive"
    writer.join(timeout=30)
    assert not writer.is_alive()


def _reserve_in_child(path: str, queue: object) -> None:
    from execbudget.ledger import Ledger

    ledger = _PARENT_LEDGER[0]  # inherited through fork, writer thread and all
    org = LineKey("org:o", "total", "cost")
    rid = ledger.reserve([LineRequest(org, limit=100, amount=3)])
    ledger.commit(rid, {"cost": 2})
    queue.put(Ledger.from_url(f"sqlite:///{path}").lines()[0].spent)  # type: ignore[attr-defined]


_PARENT_LEDGER: list[Ledger] = []


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_writer(tmp_path: Path) -> None:
    import multiprocessing

    path = str(tmp_path / "f.db")
    ledger = Ledger.from_url(f"sqlite:///{path}?group_commit=1")
    org = LineKey("org:o", "total", "cost")
    ledger.commit(ledger.reserve([LineRequest(org, limit=100, amount=5)]), {"cost": 5})
    _PARENT_LEDGER[:] = [ledger]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_reserve_in_child, args=(path, queue))
    child.start()
    assert queue.get(timeout=60) == 7
    child.join(timeout=60)
    assert child.exitcode == 0
    ledger.commit(ledger.reserve([LineRequest(org, limit=100, amount=3)]), {"cost": 1})
    assert ledger.lines()[0].spent == 8
    ledger.close()
    _PARENT_LEDGER.clear()
