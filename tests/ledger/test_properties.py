"""
Property tests of the ledger invariants, on memory and SQLite:

* after any operation, on every line: spent + held ≤ limit + overrun (a line only goes
  over its limit through a recorded overrun, never through a reserve);
* once every hold is settled, held is zero on every line;
* the event log explains every line exactly (reconcile finds nothing).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execbudget.clock import ManualClock
from execbudget.ledger import (
    Ledger,
    LineKey,
    LineRequest,
    MemoryStorage,
    OnExpiry,
    SQLiteStorage,
    reconcile,
)

SCOPES = ["org:o", "team:t1", "team:t2", "run:r1", "run:r2"]
LIMITS = {"org:o": 300, "team:t1": 200, "team:t2": 150, "run:r1": 120, "run:r2": 90}

reserve_op = st.tuples(
    st.just("reserve"),
    st.lists(st.sampled_from(SCOPES), min_size=1, max_size=4, unique=True),
    st.integers(0, 120),
    st.sampled_from([OnExpiry.RELEASE, OnExpiry.CHARGE]),
)
settle_op = st.tuples(
    st.sampled_from(["commit", "release", "advance"]),
    st.integers(0, 50),  # which hold (modulo the number made)
    st.integers(0, 160),  # actual (may exceed the hold: an overrun)
)
ops = st.lists(st.one_of(reserve_op, settle_op), max_size=40)


def check_invariants(ledger: Ledger) -> None:
    for line in ledger.lines():
        assert line.spent + line.held <= line.limit + line.overrun, line
        assert line.held >= 0


def run_ops(ledger: Ledger, clock: ManualClock, script: list[tuple[object, ...]]) -> None:
    rids: list[str] = []
    for op in script:
        if op[0] == "reserve":
            _, scopes, amount, on_expiry = op
            lines = [
                LineRequest(LineKey(str(s), "total", "cost"), LIMITS[str(s)], int(amount))  # type: ignore[arg-type]
                for s in scopes  # type: ignore[attr-defined]
            ]
            rid, outcome = ledger.try_reserve(lines, ttl_s=30, on_expiry=on_expiry)  # type: ignore[arg-type]
            if outcome.denial is None:
                rids.append(rid)
        elif op[0] == "advance":
            clock.advance(float(op[2]))  # type: ignore[arg-type]
            ledger.reap()
        elif rids:
            rid = rids[int(op[1]) % len(rids)]  # type: ignore[call-overload]
            if op[0] == "commit":
                ledger.commit(rid, {"cost": int(op[2])})  # type: ignore[call-overload]
            else:
                ledger.release(rid)
        check_invariants(ledger)
    for rid in rids:
        ledger.release(rid)
    assert all(line.held == 0 for line in ledger.lines())
    assert reconcile(ledger.lines(), ledger.events(0, 100_000)) == []


@settings(max_examples=150, deadline=None)
@given(script=ops)
def test_memory_invariants(script: list[tuple[object, ...]]) -> None:
    clock = ManualClock()
    run_ops(Ledger(MemoryStorage(clock=clock)), clock, script)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops)
def test_sqlite_invariants(script: list[tuple[object, ...]]) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(SQLiteStorage(Path(tmp) / "p.db", clock=clock))
        try:
            run_ops(ledger, clock, script)
        finally:
            ledger.close()
