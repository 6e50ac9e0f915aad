"""
The exhaustion race's asyncio worker, for the PostgreSQL "second host": one process, one
``AsyncPostgresStorage`` pool, ``tasks`` coroutines draining the same chain as the
thread workers of ``_exhaust`` (same chain, same amounts, same give-up rule).
"""

from __future__ import annotations

import asyncio
import random

from execbudget.ledger import AsyncLedger, ReserveStatus

from ._exhaust import GIVE_UP_AFTER, MAX_AMOUNT, chain_for


async def _drain(ledger: AsyncLedger, worker: int, seed: int) -> tuple[int, int, int]:
    rng = random.Random(seed)
    committed = grants = denials = streak = 0
    while streak < GIVE_UP_AFTER:
        amount = rng.randint(1, MAX_AMOUNT)
        rid, outcome = await ledger.try_reserve(chain_for(worker, amount), ttl_s=60)
        if outcome.status is not ReserveStatus.OK:
            denials += 1
            streak += 1
            continue
        streak = 0
        grants += 1
        actual = rng.randint(amount // 2, amount)
        await ledger.commit(rid, {"cost": actual})
        committed += actual
    return committed, grants, denials


async def _main(url: str, proc: int, tasks: int) -> tuple[int, int, int]:
    async with AsyncLedger.from_url(url) as ledger:
        results = await asyncio.gather(
            *(_drain(ledger, proc * tasks + t, seed=proc * 1000 + t) for t in range(tasks))
        )
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


def async_process_main(url: str, proc: int, tasks: int) -> tuple[int, int, int]:
    """One process of asyncio workers sharing one async pool."""
    return asyncio.run(_main(url, proc, tasks))
