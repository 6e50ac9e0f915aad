"""
The settlement of a whole (non-streamed) call is written after the answer leaves: the hold
is still always settled, whatever the client does, and a shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from execbudget.errors import LedgerUnavailable
from execbudget.testing import FakeProvider

from ._harness import ACME_KEY, line
from .conftest import AsgiFactory

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
POLICY = {"scopes": [{"match": "org:*", "limits": {"cost": "5 USD"}}]}


class _SlowSettle:
    """Holds every settlement of ``storage`` until ``go`` is set; counts those that landed."""

    def __init__(self, storage: Any) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.landed = 0
        self._settle = storage.settle
        storage.settle = self.settle  # the instance attribute shadows the method

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        await self.go.wait()
        outcome = await self._settle(*args, **kwargs)
        self.landed += 1
        return outcome


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {ACME_KEY}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": json.dumps(BODY).encode(), "more_body": False}


async def test_the_answer_leaves_before_the_settlement_is_written(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    slow = _SlowSettle(gw.gateway.ledger.storage)
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    call = asyncio.ensure_future(gw.app(_scope(), _receive, send))
    await asyncio.wait_for(answered.wait(), 10)
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    # the headers already say what the settlement charges and gives back
    assert b"x-execbudget-charged-cost" in headers and b"x-execbudget-remaining-cost" in headers
    assert not call.done() and slow.landed == 0  # the request waits for its settlement
    assert len(gw.gateway.sync_ledger.holds()) == 1
    slow.go.set()
    await asyncio.wait_for(call, 10)
    assert slow.landed == 1
    assert gw.gateway.sync_ledger.holds() == []
    org = line(gw.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent > 0 and org.held == 0


async def test_a_client_gone_before_the_answer_still_settles(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client went away")

    with pytest.raises(OSError):
        await gw.app(_scope(), _receive, send)
    assert gw.gateway.sync_ledger.holds() == []
    org = line(gw.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent > 0 and org.held == 0
    assert len(fake_provider.requests) == 1


async def test_shutdown_waits_for_settlements_still_being_written(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    slow = _SlowSettle(gw.gateway.ledger.storage)
    answered = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            answered.set()

    call = asyncio.ensure_future(gw.app(_scope(), _receive, send))
    await asyncio.wait_for(answered.wait(), 10)
    await asyncio.wait_for(slow.started.wait(), 10)
    call.cancel()  # the server gives up on the request task (shutdown)
    await asyncio.gather(call, return_exceptions=True)
    assert slow.landed == 0
    closing = asyncio.ensure_future(gw.gateway.aclose())
    await asyncio.sleep(0.1)
    assert not closing.done()  # the ledger is not closed under a settlement
    slow.go.set()
    await asyncio.wait_for(closing, 10)
    assert slow.landed == 1


async def test_shutdown_waits_for_a_settlement_the_ledger_refused_and_retries_it_at_once(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    # The ledger refuses the settlement three times: settle_hold hands it to a background
    # retry whose schedule (0.05, 0.25, 1, 4, 15 s) outlasts the shutdown's grace. The
    # shutdown waits for that retry too and cuts its waits short; the call is charged.
    gw = asgi_factory(POLICY)
    storage = gw.gateway.ledger.storage
    real = storage.settle
    refusals = [1, 1, 1]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if refusals:
            refusals.pop()
            raise LedgerUnavailable("memory", "briefly unreachable")
        return await real(*args, **kwargs)

    storage.settle = flaky
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gw.app(_scope(), _receive, send)
    assert sent[0]["status"] == 200
    assert len(gw.gateway.sync_ledger.holds()) == 1  # refused once, being retried
    started = time.monotonic()
    await gw.gateway.aclose()
    assert time.monotonic() - started < 2.0  # not the 5.3 s the schedule would take
    assert refusals == []
    assert gw.gateway.sync_ledger.holds() == []
    org = line(gw.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent > 0 and org.held == 0


def test_the_shutdown_grace_covers_the_retries_at_shutdown() -> None:
    from execbudget.gateway.admission import SETTLE_RETRIES_S, SHUTDOWN_RETRY_S
    from execbudget.gateway.app import SETTLE_GRACE_S

    assert len(SETTLE_RETRIES_S) * SHUTDOWN_RETRY_S < SETTLE_GRACE_S / 2


async def test_a_request_cancelled_while_its_settlement_is_written_stays_cancelled(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    slow = _SlowSettle(gw.gateway.ledger.storage)

    async def send(message: dict[str, Any]) -> None:
        pass

    call = asyncio.ensure_future(gw.app(_scope(), _receive, send))
    await asyncio.wait_for(slow.started.wait(), 10)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    assert call.cancelled()  # the cancellation is not swallowed
    slow.go.set()  # the settlement itself went on: the shutdown sees it land
    await asyncio.wait_for(gw.gateway.aclose(), 10)
    assert slow.landed == 1 and gw.gateway.sync_ledger.holds() == []
