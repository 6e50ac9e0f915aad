"""
The SQLite ledger's fast paths give the same answers as reading the books.

A reserve updates each line only where it grants and, if any line refused, undoes itself
and reserves again with a read (to name the refusing line). A settle of a hold this
storage made skips reading the hold back, and must still be right when the hold was
settled, reaped or made by another connection or process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from execbudget import BudgetExceeded, Ledger
from execbudget.clock import ManualClock
from execbudget.ledger import LineKey, LineRequest, SQLiteStorage
from execbudget.ledger._types import ReserveStatus, SettleStatus

ORG = LineKey("org:a", "total", "cost")
RUN = LineKey("run:r", "total", "cost")


def _chain(amount: int, org_limit: int = 100, run_limit: int = 1000) -> list[LineRequest]:
    return [LineRequest(ORG, org_limit, amount), LineRequest(RUN, run_limit, amount)]


def _books(ledger: Ledger) -> dict[LineKey, tuple[int, int]]:
    return {s.key: (s.spent, s.held) for s in ledger.lines()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def two(tmp_path: Path, clock: ManualClock) -> tuple[Ledger, Ledger]:
    """Two storages on one file: two processes, as far as the ledger can tell."""
    path = tmp_path / "l.db"
    return Ledger(SQLiteStorage(path, clock=clock)), Ledger(SQLiteStorage(path, clock=clock))


def test_a_refusal_names_the_line_and_changes_nothing(two: tuple[Ledger, Ledger]) -> None:
    a, _ = two
    a.reserve(_chain(60))
    before = _books(a)
    rid, outcome = a.try_reserve(_chain(50, run_limit=10_000))
    assert outcome.status is ReserveStatus.DENIED
    assert outcome.denial is not None
    assert (outcome.denial.key, outcome.denial.held, outcome.denial.requested) == (ORG, 60, 50)
    assert _books(a) == before
    assert a.hold(rid) is None  # the claim was undone with the rest
    with pytest.raises(BudgetExceeded):
        a.reserve(_chain(41))
    a.reserve(_chain(40))  # exactly what is left still fits
    assert _books(a)[ORG] == (0, 100)


def test_a_refusal_on_a_blocked_line(two: tuple[Ledger, Ledger]) -> None:
    a, _ = two
    a.block(RUN, "killed")
    _, outcome = a.try_reserve(_chain(1))
    assert outcome.denial is not None
    assert (outcome.denial.key, outcome.denial.reason) == (RUN, "killed")
    assert ORG not in _books(a)  # nor was the line the refused reserve would create


def test_settled_by_another_storage_then_by_its_maker(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    rid = a.reserve(_chain(30))
    assert b.commit(rid, {"cost": 10}).status is SettleStatus.OK
    late = a.commit(rid, {"cost": 25})  # a knows the hold, but it is no longer held
    assert late.status is SettleStatus.SETTLED
    assert dict(late.charged) == {ORG: 10, RUN: 10}
    assert _books(a) == {ORG: (10, 0), RUN: (10, 0)}


def test_made_by_another_storage_settles_by_reading_it(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    rid = a.reserve(_chain(30))
    outcome = b.commit(rid, {"cost": 12})
    assert (outcome.status, dict(outcome.charged)) == (SettleStatus.OK, {ORG: 12, RUN: 12})
    assert a.commit(rid).status is SettleStatus.SETTLED


def test_reaped_elsewhere_before_its_maker_settles(
    two: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    a, b = two
    rid = a.reserve(_chain(30), ttl_s=5)
    clock.advance(6)
    assert b.reap() == 1
    assert a.commit(rid, {"cost": 30}).status is SettleStatus.SETTLED
    assert _books(a) == {ORG: (0, 0), RUN: (0, 0)}


def test_an_expired_hold_not_yet_reaped_still_settles(
    two: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    a, _ = two
    rid = a.reserve(_chain(30), ttl_s=5)
    clock.advance(6)
    assert a.commit(rid, {"cost": 7}).status is SettleStatus.OK
    assert _books(a) == {ORG: (7, 0), RUN: (7, 0)}


def test_a_rid_reused_after_its_tombstone_is_purged(
    two: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    """The maker's memory of the first hold must not settle the second one's lines."""
    a, b = two
    a.reserve(_chain(30), rid="same")
    b.commit("same", {"cost": 30})
    clock.advance(10)
    assert b.purge(clock.now_ms()) == 1
    other = LineKey("team:t", "total", "cost")
    b.reserve([LineRequest(other, 100, 20)], rid="same")
    outcome = a.commit("same", {"cost": 5})
    assert (outcome.status, dict(outcome.charged)) == (SettleStatus.OK, {other: 5})
    assert _books(a) == {ORG: (30, 0), RUN: (30, 0), other: (5, 0)}


def test_release_overrun_and_charge_now_through_the_fast_paths(two: tuple[Ledger, Ledger]) -> None:
    a, _ = two
    a.release(a.reserve(_chain(30)))
    over = a.commit(a.reserve(_chain(10)), {"cost": 15})
    assert over.status is SettleStatus.OVERRUN
    assert _books(a) == {ORG: (15, 0), RUN: (15, 0)}
    assert {s.key: s.blocked for s in a.lines()} == {ORG: "overrun", RUN: "overrun"}
    a.block(ORG, None)
    a.block(RUN, None)
    rid = a.reserve(_chain(5), charge_now=True)
    assert a.commit(rid).status is SettleStatus.SETTLED
    assert _books(a) == {ORG: (20, 0), RUN: (20, 0)}


def test_the_memory_of_holds_is_bounded(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "l.db")
    ledger = Ledger(storage)
    rids = [ledger.reserve(_chain(1, 10**6, 10**6)) for _ in range(5000)]
    assert len(storage._held) <= 4096
    for rid in rids:  # forgotten or not, every hold settles
        assert ledger.commit(rid, {"cost": 0}).status is SettleStatus.OK
    assert not storage._held
    assert _books(ledger) == {ORG: (0, 0), RUN: (0, 0)}


def test_a_known_chain_writes_what_a_new_one_does(two: tuple[Ledger, Ledger]) -> None:
    """
    The first reserve on a chain builds its ids and JSON piece by piece; later ones fill
    the chain's remembered template. Another storage reads both back the same way.
    """
    a, b = two
    tok = LineKey("run:r", "total", "tokens")

    def chain(cost: int) -> list[LineRequest]:
        return [LineRequest(ORG, 100, cost), LineRequest(tok, 1000, 10 * cost)]

    first = a.reserve(chain(3))  # the chain is new to ``a``
    second = a.reserve(chain(2))  # now it is known
    charged = a.reserve(chain(1), charge_now=True)
    third = a.reserve(chain(4))
    assert a.commit(first, {"cost": 2, "tokens": 5}).charged == {ORG: 2, tok: 5}
    assert dict(a.commit(second, {"tokens": 7}).charged) == {ORG: 2, tok: 7}
    assert dict(a.release(third).charged) == {ORG: 0, tok: 0}
    expected = {
        first: ({ORG: 3, tok: 30}, {ORG: 2, tok: 5}),
        second: ({ORG: 2, tok: 20}, {ORG: 2, tok: 7}),
        charged: ({ORG: 1, tok: 10}, {ORG: 1, tok: 10}),
        third: ({ORG: 4, tok: 40}, {ORG: 0, tok: 0}),
    }
    for rid, (held, spent) in expected.items():
        record = b.hold(rid)
        assert record is not None
        assert (dict(record.amounts), dict(record.charged)) == (held, spent)
    logged = [(e.kind, e.rid, dict(e.amounts)) for e in b.events()]
    assert logged == [
        ("reserve", first, {ORG: 3, tok: 30}),
        ("reserve", second, {ORG: 2, tok: 20}),
        ("reserve", charged, {ORG: 1, tok: 10}),
        ("commit", charged, {ORG: 1, tok: 10}),
        ("reserve", third, {ORG: 4, tok: 40}),
        ("commit", first, {ORG: 2, tok: 5}),
        ("commit", second, {ORG: 2, tok: 7}),
        ("release", third, {ORG: 0, tok: 0}),
    ]
    assert _books(b) == {ORG: (5, 0), tok: (22, 0)}


def test_the_memory_of_chains_is_bounded(tmp_path: Path) -> None:
    """A new window is a new chain: the chains remembered are bounded, forgetting is safe."""
    storage = SQLiteStorage(tmp_path / "l.db")
    ledger = Ledger(storage)
    rids = [
        ledger.reserve(
            [LineRequest(ORG, 10**6, 1), LineRequest(LineKey(f"run:{i}", "total", "cost"), 9, 1)]
        )
        for i in range(1100)
    ]
    assert 0 < len(storage._chains) <= 1024
    for rid in rids:
        assert ledger.commit(rid).status is SettleStatus.OK
    assert ledger.commit(ledger.reserve(_chain(1, 10**6))).status is SettleStatus.OK
    assert {s.key: s.spent for s in ledger.lines("org:")} == {ORG: 1101}


def test_fail_fast_gives_up_at_once_and_a_later_plain_call_waits_again(tmp_path: Path) -> None:
    """The no-wait mode outlives the block (fewer statements), but only for inline calls."""
    storage = SQLiteStorage(tmp_path / "l.db", busy_timeout_ms=5_000)
    ledger = Ledger(storage)
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the file
    with storage.fail_fast(), pytest.raises(sqlite3.OperationalError) as busy:
        storage.reserve("r1", _chain(1), 60_000)
    assert storage.is_busy(busy.value)
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    ledger.reserve(_chain(1), rid="r2")  # waits for the other writer, then grants
    assert time.monotonic() - started >= 0.25
    assert ledger.hold("r2") is not None and ledger.hold("r1") is None
    other.close()
