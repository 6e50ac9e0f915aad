"""
The exhaustion race: processes × threads draining one chain with a hot org line.

Each worker reserves a random amount on the chain, commits a random actual no larger than
the hold, and reports what it committed. The test then checks zero overshoot on every
line, books equal to the workers' totals, and the utilisation reached at exhaustion.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from execbudget.ledger import Ledger, LineKey, LineRequest, ReserveStatus

ORG_LIMIT = 40_000
TEAM_LIMIT = 10**9
MAX_AMOUNT = 10
GIVE_UP_AFTER = 40  # consecutive denials before a worker decides the budget is spent


def chain_for(worker: int, amount: int, prefix: str = "") -> list[LineRequest]:
    """A 4-line chain: the org line is shared by all, the rest per team / run / agent."""
    return [
        LineRequest(LineKey(f"{prefix}org:hot", "total", "cost"), ORG_LIMIT, amount),
        LineRequest(LineKey(f"{prefix}team:t{worker % 2}", "total", "cost"), TEAM_LIMIT, amount),
        LineRequest(LineKey(f"{prefix}run:r{worker}", "total", "cost"), TEAM_LIMIT, amount),
        LineRequest(LineKey(f"{prefix}agent:a{worker}", "total", "cost"), TEAM_LIMIT, amount),
    ]


def drain(ledger: Any, worker: int, seed: int, prefix: str = "") -> tuple[int, int, int]:
    """Race until the org budget is gone; returns (committed, grants, denials)."""
    rng = random.Random(seed)
    committed = grants = denials = streak = 0
    while streak < GIVE_UP_AFTER:
        amount = rng.randint(1, MAX_AMOUNT)
        rid, outcome = ledger.try_reserve(chain_for(worker, amount, prefix), ttl_s=60)
        if outcome.status is not ReserveStatus.OK:
            denials += 1
            streak += 1
            continue
        streak = 0
        grants += 1
        actual = rng.randint(amount // 2, amount)
        ledger.commit(rid, {"cost": actual})
        committed += actual
    return committed, grants, denials


def process_main(
    url: str,
    proc: int,
    threads: int,
    prefix: str = "",
    make: Callable[[str], Any] = Ledger.from_url,
) -> tuple[int, int, int]:
    """One process: ``threads`` workers sharing one ledger object (one pool / connection set)."""
    ledger = make(url)
    results: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        try:
            result = drain(ledger, worker, seed=proc * 1000 + worker, prefix=prefix)
        except BaseException as exc:  # a dead worker must fail the test with its own cause
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(result)

    pool = [threading.Thread(target=run, args=(proc * threads + t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    ledger.close()
    if errors:
        raise RuntimeError(f"{len(errors)} worker thread(s) of process {proc} died") from errors[0]
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))
