"""
A whole call's settlement is written after its answer leaves. A client that sends its next
call the moment it has the answer must still be admitted on the room that answer's
``x-execbudget-remaining-cost`` header said it had: a hold refused while this process's
settlements are still writing waits for them (bounded) and is tried once more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from execbudget.testing import FakeProvider

from .conftest import AsgiFactory
from .test_settle_after import _scope

BIG = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
SMALL = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _receive(body: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    return receive


class _SlowSettle:
    """A ledger whose settlements take 50 ms (a PostgreSQL commit with fsync, far Redis)."""

    def __init__(self, storage: Any) -> None:
        self._settle = storage.settle
        storage.settle = self.settle

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        return await self._settle(*args, **kwargs)


async def _call(
    app: Any, body: dict[str, Any], answered: asyncio.Event | None = None
) -> tuple[asyncio.Future[None], list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        last = message["type"] == "http.response.body" and not message.get("more_body")
        if answered is not None and last:
            answered.set()

    return asyncio.ensure_future(app(_scope(), _receive(body), send)), sent


async def test_the_next_call_sent_at_once_is_admitted_on_the_room_the_answer_showed(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    # a limit just above one BIG call's hold: a SMALL call fits only once BIG has settled
    probe = asgi_factory({"scopes": [{"match": "org:*", "limits": {"cost": "5 USD"}}]})
    call, sent = await _call(probe.app, BIG)
    await call
    held = Decimal(dict(sent[0]["headers"])[b"x-execbudget-held-cost"].decode())
    limit = held + Decimal("0.000000001")
    gw = asgi_factory({"scopes": [{"match": "org:*", "limits": {"cost": f"{limit} USD"}}]})
    _SlowSettle(gw.gateway.ledger.storage)

    answered = asyncio.Event()
    first, sent1 = await _call(gw.app, BIG, answered)
    await asyncio.wait_for(answered.wait(), 10)
    assert sent1[0]["status"] == 200
    remaining = Decimal(dict(sent1[0]["headers"])[b"x-execbudget-remaining-cost"].decode())
    assert remaining > 0
    assert not first.done()  # its settlement is still being written

    second, sent2 = await _call(gw.app, SMALL)  # the client's next call, at once
    await asyncio.wait_for(second, 10)
    await first
    assert sent2[0]["status"] == 200, b"".join(m.get("body", b"") for m in sent2[1:])
    headers2 = dict(sent2[0]["headers"])
    assert b"x-execbudget-clamped-from" not in headers2
    assert gw.gateway.sync_ledger is not None and gw.gateway.sync_ledger.holds() == []


async def test_a_refusal_with_nothing_settling_is_still_a_402(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory({"scopes": [{"match": "org:*", "limits": {"cost": "0.000000001 USD"}}]})
    call, sent = await _call(gw.app, SMALL)
    await asyncio.wait_for(call, 10)
    assert sent[0]["status"] == 402
