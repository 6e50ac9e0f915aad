"""
Concurrency: 8 processes × 8 threads racing one chain to exhaustion (DESIGN §3.1).

Zero overshoot on every line, the ledger's totals equal what the workers committed, and
utilisation at exhaustion of at least 99% when single holds are small against the budget.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from execbudget.ledger import Ledger, reconcile

from ._exhaust import MAX_AMOUNT, ORG_LIMIT, process_main

PROCESSES = 8
THREADS = 8


def race(url: str, prefix: str = "") -> tuple[int, int, int]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(process_main, [(url, p, THREADS, prefix) for p in range(PROCESSES)])
    return tuple(sum(r[i] for r in results) for i in range(3))  # type: ignore[return-value]


def check_books(url: str, committed: int, prefix: str = "") -> None:
    with Ledger.from_url(url) as ledger:
        lines = ledger.lines(prefix)
        org = next(line for line in lines if line.key.scope == f"{prefix}org:hot")
        assert org.held == 0
        assert org.spent <= org.limit, "overshoot"
        assert org.spent == committed, "books differ from the workers' totals"
        assert all(line.spent <= line.limit and line.held == 0 for line in lines)
        # After the race the org line has less room than the largest hold left.
        assert org.limit - org.spent < MAX_AMOUNT * 3
        assert org.spent / org.limit >= 0.99
        assert reconcile(lines, ledger.events(0, 10**7)) == []


@pytest.mark.slow
@pytest.mark.xdist_group("exhaustion")
@pytest.mark.parametrize(
    "options", ["synchronous=NORMAL", "synchronous=FULL", "synchronous=FULL&group_commit=1"]
)
def test_sqlite_exhaustion_zero_overshoot(tmp_path: Path, options: str) -> None:
    url = f"sqlite:///{tmp_path}/race.db?{options}"
    Ledger.from_url(url).close()  # create the schema once, before the race
    committed, grants, denials = race(url)
    assert grants > ORG_LIMIT // MAX_AMOUNT and denials >= PROCESSES * THREADS
    check_books(url, committed)
