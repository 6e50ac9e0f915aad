"""
The room-left headers on the Redis ledger come from the books the reserve returned, with
no second read of the lines; a line the reserve does not cover (a dimension the gateway
never holds) is still read, and shown.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from execbudget.pricing import PriceBook, Usage
from execbudget.units import money_to_units

from ..ledger import _redis_backend as rd
from ._harness import ACME_KEY
from .conftest import AsgiFactory

pytestmark = pytest.mark.redis
MINI = "gpt-4o-mini"
BODY = {"model": MINI, "messages": [{"role": "user", "content": "Room?"}], "max_tokens": 30}


def _redis_url() -> str:
    rd.require_redis()
    return rd.url_with(rd.REDIS_URL, prefix=f"ebtest-room-{uuid.uuid4().hex[:8]}:")


def _count_reads(gw: Any) -> list[int]:
    """Counts the ledger's exact line reads (the gated storage's ``read_lines``)."""
    storage = gw.gateway.enforcer.aledger.storage
    inner = storage.read_lines
    calls: list[int] = []

    async def counted(keys: Any) -> Any:
        calls.append(len(keys))
        return await inner(keys)

    storage.read_lines = counted
    return calls


async def test_room_comes_from_the_reserve_without_a_read(asgi_factory: AsgiFactory) -> None:
    policy = {"scopes": [{"match": "org:acme", "limits": {"cost": "1 USD", "calls": 100}}]}
    gw = asgi_factory(policy, ledger_url=_redis_url())
    reads = _count_reads(gw)
    spent = 0
    for calls_before in range(2):
        response = await gw.call("/v1/chat/completions", BODY, key=ACME_KEY)
        assert response.status_code == 200
        usage = response.json()["usage"]
        tokens = Usage(
            input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
        )
        spent += money_to_units(PriceBook().cost(MINI, tokens))
        headers = response.headers
        # as the books will be once this call's settlement lands: exact
        assert money_to_units(Decimal(1) - Decimal(headers["x-execbudget-remaining-cost"])) == (
            spent
        )
        assert headers["x-execbudget-remaining-calls"] == str(100 - calls_before - 1)
        assert headers["x-execbudget-remaining-scope"] == "org:acme"
    assert reads == []


async def test_a_line_the_reserve_does_not_hold_is_read(asgi_factory: AsgiFactory) -> None:
    policy = {"scopes": [{"match": "org:acme", "limits": {"cost": "1 USD", "steps": 7}}]}
    gw = asgi_factory(policy, ledger_url=_redis_url())
    reads = _count_reads(gw)
    response = await gw.call("/v1/chat/completions", BODY, key=ACME_KEY)
    assert response.status_code == 200
    assert response.headers["x-execbudget-remaining-steps"] == "7"
    assert "x-execbudget-remaining-cost" in response.headers
    assert reads == [2]  # the cost and steps lines, in one read
