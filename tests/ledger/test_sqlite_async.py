"""The async face of SQLite: inline when the file is free, a worker thread when it is busy."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from execbudget.ledger import AsyncLedger, LineKey, LineRequest, SQLiteStorage

LINE = [LineRequest(LineKey("org:a", "total", "cost"), 100, 10)]


async def test_busy_file_makes_the_call_wait_in_a_thread_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = AsyncLedger(SQLiteStorage(path))
    await ledger.lines()  # schema in place before the other writer takes the lock
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    task = asyncio.create_task(ledger.reserve(LINE))
    for _ in range(3):
        await asyncio.sleep(0)  # the inline attempt ran and gave up; the thread waits
    assert not task.done()
    blocker.execute("COMMIT")
    blocker.close()
    rid = await task
    assert (await ledger.commit(rid, {"cost": 4})).status == "ok"
    assert [(line.spent, line.held) for line in await ledger.lines()] == [(4, 0)]
    await ledger.aclose()


async def test_free_file_runs_inline_on_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_off: list[object] = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed_off.append(fn)
        return await real_to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting_to_thread)
    ledger = AsyncLedger(SQLiteStorage(tmp_path / "l.db"))
    rid = await ledger.reserve(LINE)
    await ledger.release(rid)
    assert handed_off == []  # the file was free: no operation went to a worker thread
    await ledger.aclose()
