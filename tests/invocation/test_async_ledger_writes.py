"""
Async calls on a SQLite ledger: a ledger write that completes inline costs no task, and
one that has to wait for another writer (a worker thread) is still protected from the
caller's cancellation: a reservation that lands after the caller was cancelled is
released, and a call that was not cancelled goes on once the file is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import execbudget
from execbudget.ledger import SQLiteStorage
from execbudget.testing import FakeProvider

from .conftest import MakeEnforcer, held, spent

MINI = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Tell me about budgets."}]
LIMITS = {"scopes": [{"match": "run:*", "limits": {"cost": "10 USD", "tokens": "1M"}}]}


def _lock_file(enforcer: Any) -> sqlite3.Connection:
    """Another writer takes the ledger file's write lock (as another process would)."""
    storage = enforcer.ledger.storage
    assert isinstance(storage, SQLiteStorage)
    other = sqlite3.connect(storage.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_inline_writes_start_no_task(fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    enforcer = make_enforcer(LIMITS, ledger="sqlite")
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            await client.chat.completions.create(model=MINI, messages=HELLO)  # warm up
            before = len(asyncio.all_tasks())
            seen: list[int] = []
            orig = enforcer.ledger.storage.settle

            def settle(*args: Any, **kwargs: Any) -> Any:
                seen.append(len(asyncio.all_tasks()))
                return orig(*args, **kwargs)

            enforcer.ledger.storage.settle = settle  # type: ignore[method-assign]
            await client.chat.completions.create(model=MINI, messages=HELLO)
    assert seen == [before]
    assert held(enforcer) == 0 and spent(enforcer, "calls") == 0  # no calls limit: no line


async def test_a_call_waits_for_a_busy_file_then_goes_on(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(LIMITS, ledger="sqlite")
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            await client.chat.completions.create(model=MINI, messages=HELLO)
            other = _lock_file(enforcer)
            task = asyncio.create_task(client.chat.completions.create(model=MINI, messages=HELLO))
            await asyncio.sleep(0.2)
            assert not task.done()  # its reserve waits in a worker thread
            other.execute("COMMIT")
            other.close()
            await task
    assert held(enforcer) == 0 and len(fp.requests) == 2


async def test_a_reserve_that_lands_after_the_caller_was_cancelled_is_released(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(LIMITS, ledger="sqlite")
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            await client.chat.completions.create(model=MINI, messages=HELLO)
            other = _lock_file(enforcer)
            task = asyncio.create_task(client.chat.completions.create(model=MINI, messages=HELLO))
            await asyncio.sleep(0.2)
            task.cancel()
            other.execute("COMMIT")
            other.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(250):  # the reservation lands, then is released in the background
                if any(e.kind == "release" for e in enforcer.ledger.events()):
                    break
                await asyncio.sleep(0.02)
    assert [e.kind for e in enforcer.ledger.events()][-2:] == ["reserve", "release"]
    assert held(enforcer) == 0 and len(fp.requests) == 1
