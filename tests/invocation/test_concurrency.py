"""
Many callers on one nearly spent budget: 64 concurrent async calls (and 16 threads) never
overspend it, every hold settles, and with clamping the budget is used almost entirely.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

import execbudget
from execbudget import BudgetExceeded, ContextThreadPoolExecutor
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units

from .conftest import Clients, MakeEnforcer, held, overrun, spent

MINI = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Write a long story about a careful budget."}]
LIMIT = Decimal("0.0005")  # about 25 calls of 30 output tokens


def policy(mode: str) -> dict[str, Any]:
    return {
        "degradation": {"mode": mode},
        "scopes": [
            {
                "match": "team:*",
                "limits": {"cost": f"{LIMIT} USD", "tokens": 40_000},
                "per_call": {"min_output_tokens": 4},
            }
        ],
    }


@pytest.mark.parametrize("ledger", ["memory", "sqlite"])
@pytest.mark.parametrize("mode", ["clamp", "deny"])
async def test_64_concurrent_calls_never_overspend(
    ledger: str, mode: str, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=10_000, latency_ms=5)
    enforcer = make_enforcer(policy(mode), ledger=ledger)
    outcomes: list[str] = []

    async def one(client: Any) -> None:
        try:
            await client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=800)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("denied")

    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        with enforcer.scope("team", "search"):
            await asyncio.gather(*(one(client) for _ in range(64)))
    assert len(outcomes) == 64 and "ok" in outcomes
    assert spent(enforcer, "cost") <= money_to_units(LIMIT)
    assert held(enforcer) == 0 and overrun(enforcer) == 0
    assert outcomes.count("ok") == len(fp.requests)  # a denied call never reached the server
    billed = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in fp.requests)
    assert spent(enforcer, "tokens") == billed
    if mode == "clamp":  # what is left cannot buy the floor: the budget is used up
        assert spent(enforcer, "cost") >= money_to_units(LIMIT) * 95 // 100


def test_threads_never_overspend(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=10_000)
    enforcer = make_enforcer(policy("clamp"), ledger="sqlite")
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)

    def one(_: int) -> str:
        try:
            client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=800)
            return "ok"
        except BudgetExceeded:
            return "denied"

    with enforcer.scope("team", "search"), ContextThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(48)))
    assert "ok" in outcomes and "denied" in outcomes
    assert money_to_units(LIMIT) * 95 // 100 <= spent(enforcer, "cost") <= money_to_units(LIMIT)
    assert held(enforcer) == 0
