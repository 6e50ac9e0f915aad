"""
A request cancelled while its reserve is in flight leaves no hold, whichever way the race
goes (``admission.try_hold`` awaits the reserve directly and undoes it on cancellation).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from execbudget.enforcer import Enforcer
from execbudget.gateway import admission
from execbudget.gateway.admission import settlements, try_hold
from execbudget.gateway.chain import GATEWAY_WINDOW, ChainBuilder
from execbudget.gateway.keys import KeyRecord, hash_key
from execbudget.ledger import AsyncLedger, LineKey, MemoryStorage
from execbudget.ledger._ledger import ThreadedStorage

POLICY = {"scopes": [{"match": "org:acme", "limits": {"cost": "1 USD"}}]}
KEY = KeyRecord("bot", hash_key("ebk-test-0123456789abcdefghijklmnop"), "acme", "search")


class _FirstReserveStalls:
    """Delegates to ``inner``; the first reserve stalls before (or after) it lands."""

    scheme = "memory"
    base_exceptions: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, inner: Any, *, lands_first: bool) -> None:
        self._inner = inner
        self.lands_first = lands_first
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.original: asyncio.Future[Any] | None = None
        self.calls = 0
        self.fail_next = 0  # reserves after the first that fail like an unreachable server

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("server went away")
            return await self._inner.reserve(*args, **kwargs)
        if self.lands_first:  # the command landed; its reply never comes back
            await self._inner.reserve(*args, **kwargs)
            self.entered.set()
            await asyncio.Event().wait()
        self.entered.set()
        # The command is still on its way: it lands when the test says, whatever
        # happens to the caller (a background task, as a socket would deliver it).
        self.original = asyncio.ensure_future(self._later(args, kwargs))
        return await asyncio.shield(self.original)

    async def _later(self, args: Any, kwargs: Any) -> Any:
        await self.go.wait()
        return await self._inner.reserve(*args, **kwargs)

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.settle(*args, **kwargs)

    async def read_lines(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.read_lines(*args, **kwargs)


async def _cancel_mid_reserve(storage: _FirstReserveStalls) -> tuple[Enforcer, Any]:
    ledger = AsyncLedger(storage)  # type: ignore[arg-type]
    enforcer = Enforcer(POLICY, ledger)
    chain = ChainBuilder(enforcer).build(KEY, "gpt-4o-mini")
    request = asyncio.ensure_future(try_hold(enforcer, chain, {"cost": "0.4 USD"}, 30.0))
    await storage.entered.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await settlements(ledger).wait(5.0)  # the undo
    return enforcer, chain


@pytest.mark.parametrize("lands_first", [True, False], ids=["landed", "lands-after-undo"])
async def test_a_cancelled_reserve_holds_nothing(lands_first: bool) -> None:
    memory = MemoryStorage()
    storage = _FirstReserveStalls(ThreadedStorage(memory), lands_first=lands_first)
    enforcer, chain = await _cancel_mid_reserve(storage)
    if not lands_first:
        storage.go.set()  # the original arrives after the undo: a known rid, no hold
        assert storage.original is not None
        outcome = await storage.original
        assert outcome.status == "settled"
    assert memory.holds() == []
    for scope in chain.scopes:
        assert all(line.held == 0 for line in memory.lines(scope)), scope
    # and the budget is whole: the next call can hold all of it
    request_2 = await try_hold(enforcer, chain, {"cost": "1 USD"}, 30.0)
    assert request_2[0].hold is not None


async def test_a_kill_switch_thrown_meanwhile_does_not_stop_the_undo() -> None:
    """Killed and revived between the cancel and the original's landing: still no hold."""
    memory = MemoryStorage()
    storage = _FirstReserveStalls(ThreadedStorage(memory), lands_first=False)
    ledger = AsyncLedger(storage)  # type: ignore[arg-type]
    enforcer = Enforcer(POLICY, ledger)
    chain = ChainBuilder(enforcer).build(KEY, "gpt-4o-mini")
    request = asyncio.ensure_future(try_hold(enforcer, chain, {"cost": "0.4 USD"}, 30.0))
    await storage.entered.wait()
    killed = [LineKey(scope, GATEWAY_WINDOW, "calls") for scope in chain.scopes]
    for key in killed:
        memory.block(key, "killed")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await settlements(ledger).wait(5.0)
    for key in killed:
        memory.block(key, None)
    storage.go.set()
    assert storage.original is not None
    assert (await storage.original).status == "settled"
    assert memory.holds() == []


async def test_an_unreachable_ledger_delays_the_undo_but_it_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admission, "SETTLE_RETRIES_S", (0.01, 0.01, 0.01))
    memory = MemoryStorage()
    storage = _FirstReserveStalls(ThreadedStorage(memory), lands_first=True)
    storage.fail_next = 2  # the undo's first two reserves find the ledger down
    await _cancel_mid_reserve(storage)
    assert memory.holds() == []
    assert storage.fail_next == 0
