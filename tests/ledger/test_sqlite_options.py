"""SQLite URL options: each one reaches the connection, and bad values say what to change."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from execbudget import ConfigurationError, Ledger
from execbudget.ledger import SQLiteStorage


def _pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def test_url_options_reach_the_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db?synchronous=FULL&busy_timeout_ms=250&wal_autocheckpoint=123"
    ledger = Ledger.from_url(url)
    storage = ledger.storage
    assert isinstance(storage, SQLiteStorage)
    assert (storage.synchronous, storage.busy_timeout_ms, storage.wal_autocheckpoint) == (
        "FULL",
        250,
        123,
    )
    conn = storage._conn()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 123
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ledger.close()


def test_a_new_file_uses_small_pages_and_an_old_file_keeps_its_own(tmp_path: Path) -> None:
    Ledger.from_url(f"sqlite:///{tmp_path}/new.db").close()
    assert _pragma(tmp_path / "new.db", "page_size") == 1024
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE unrelated (x)")  # written with the default 4 KiB pages
    ledger = Ledger.from_url(f"sqlite:///{old}")
    ledger.close()
    assert _pragma(old, "page_size") == 4096


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("wal_autocheckpoint=lots", "wal_autocheckpoint='lots' must be a whole number"),
        ("busy_timeout_ms=1.5", "busy_timeout_ms='1.5' must be a whole number"),
        ("wal_autocheckpoint=-1", "wal_autocheckpoint must not be negative"),
        ("busy_timeout_ms=-5", "busy_timeout_ms must not be negative"),
        ("journal=delete", "allowed: synchronous, busy_timeout_ms, wal_autocheckpoint"),
        ("synchronous=sometimes", "is not one of OFF, NORMAL, FULL, EXTRA"),
    ],
)
def test_bad_options_are_refused_before_any_file_is_made(
    tmp_path: Path, query: str, says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says.replace("(", r"\(").replace(".", r"\.")):
        Ledger.from_url(f"sqlite:///{tmp_path}/never.db?{query}")
    assert not (tmp_path / "never.db").exists()


def _open_at_once(url: str, start: Any, opened: list[Ledger], errors: list[BaseException]) -> None:
    start.wait()
    try:
        opened.append(Ledger.from_url(url))
    except BaseException as exc:
        errors.append(exc)


def test_threads_opening_one_fresh_file_at_once_all_get_it(tmp_path: Path) -> None:
    """SQLite can refuse the WAL switch 'locked' without its busy handler; it is retried."""
    for trial in range(40):
        url = f"sqlite:///{tmp_path}/fresh{trial}.db"
        start = threading.Barrier(8)
        errors: list[BaseException] = []
        opened: list[Ledger] = []
        threads = [
            threading.Thread(target=_open_at_once, args=(url, start, opened, errors))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for ledger in opened:
            ledger.close()
        assert errors == [], (trial, errors[:1])
