"""
The ledger contract, once, for every backend and both faces (see backends.py).

Each test names the rule of DESIGN §3–4 it checks. Tests never sleep: expiry and window
roll-over move a ManualClock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from execbudget.clock import ManualClock
from execbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    CostBudgetExceeded,
    StepBudgetExceeded,
    TokenBudgetExceeded,
)
from execbudget.ledger import (
    HoldState,
    LineKey,
    LineRequest,
    OnExpiry,
    ReserveStatus,
    SettleStatus,
    reconcile,
)
from execbudget.windows import Window, window_end, window_id

ORG = LineKey("org:acme", "total", "cost")
TEAM = LineKey("team:acme/search", "total", "cost")
RUN = LineKey("run:triage#1", "total", "cost")
RUN_TOKENS = LineKey("run:triage#1", "total", "tokens")


def chain(cost: int, tokens: int = 0, limits: tuple[int, int, int, int] = (1000, 500, 300, 10_000)):
    org, team, run, tok = limits
    lines = [
        LineRequest(ORG, org, cost),
        LineRequest(TEAM, team, cost),
        LineRequest(RUN, run, cost),
    ]
    if tokens:
        lines.append(LineRequest(RUN_TOKENS, tok, tokens))
    return lines


def books(ledger: Any) -> dict[LineKey, tuple[int, int]]:
    return {line.key: (line.spent, line.held) for line in ledger.lines()}


def assert_reconciled(ledger: Any) -> None:
    assert reconcile(ledger.lines(), ledger.events(0, 100_000)) == []


# -- hold before spend: all levels grant or none changes ----------------------------------
def test_reserve_holds_on_every_line(ledger: Any) -> None:
    _rid, outcome = ledger.try_reserve(chain(100, 40))
    assert outcome.status is ReserveStatus.OK
    assert books(ledger) == {ORG: (0, 100), TEAM: (0, 100), RUN: (0, 100), RUN_TOKENS: (0, 40)}
    assert_reconciled(ledger)


def test_denial_changes_nothing_and_names_the_first_refusing_level(ledger: Any) -> None:
    ledger.reserve(chain(250), rid="a")
    before = books(ledger)
    rid, outcome = ledger.try_reserve(chain(100))  # org 650 left, team 250 left, run 50 left
    assert outcome.status is ReserveStatus.DENIED
    assert outcome.denial.key == RUN and outcome.denial.level == 2
    assert (outcome.denial.spent, outcome.denial.held, outcome.denial.requested) == (0, 250, 100)
    assert books(ledger) == before
    assert ledger.hold(rid) is None


def test_denial_raises_the_budget_type_of_the_line(ledger: Any) -> None:
    ledger.reserve(chain(10, 9_000), rid="a")
    with pytest.raises(TokenBudgetExceeded) as info:
        ledger.reserve(chain(10, 2_000))
    err = info.value
    assert (err.scope, err.dimension, err.window) == ("run:triage#1", "tokens", "total")
    assert err.limit == "10,000" and err.held == "9,000" and err.requested == "2,000"
    assert "raise the tokens limit of run:triage" in str(err)
    with pytest.raises(CostBudgetExceeded):
        ledger.reserve(chain(300))
    steps = LineRequest(LineKey("run:r", "total", "steps"), 1, 2)
    with pytest.raises(StepBudgetExceeded):
        ledger.reserve([steps])


def test_exact_fit_is_granted_and_one_more_is_not(ledger: Any) -> None:
    ledger.reserve(chain(300), rid="fill")
    _, outcome = ledger.try_reserve(chain(1))
    assert outcome.status is ReserveStatus.DENIED


# -- settle after: commit the actual, release the rest -----------------------------------
def test_commit_charges_actual_and_frees_the_rest(ledger: Any) -> None:
    rid = ledger.reserve(chain(100, 40))
    outcome = ledger.commit(rid, {"cost": 60, "tokens": 25})
    assert outcome.status is SettleStatus.OK
    assert outcome.charged[ORG] == 60 and outcome.charged[RUN_TOKENS] == 25
    assert books(ledger) == {ORG: (60, 0), TEAM: (60, 0), RUN: (60, 0), RUN_TOKENS: (25, 0)}
    assert_reconciled(ledger)


def test_commit_without_a_dimension_charges_it_in_full(ledger: Any) -> None:
    rid = ledger.reserve(chain(100, 40))
    ledger.commit(rid, {"cost": 10})
    assert books(ledger)[RUN_TOKENS] == (40, 0)


def test_release_charges_nothing(ledger: Any) -> None:
    rid = ledger.reserve(chain(100, 40))
    assert ledger.release(rid).status is SettleStatus.OK
    assert all(v == (0, 0) for v in books(ledger).values())
    assert ledger.hold(rid).state is HoldState.RELEASED


def test_charge_now_spends_in_one_step(ledger: Any) -> None:
    steps = LineKey("run:r", "total", "steps")
    for _ in range(3):
        ledger.reserve([LineRequest(steps, 3, 1)], charge_now=True)
    assert books(ledger)[steps] == (3, 0)
    with pytest.raises(StepBudgetExceeded):
        ledger.reserve([LineRequest(steps, 3, 1)], charge_now=True)
    assert_reconciled(ledger)


# -- idempotency and settle-at-most-once --------------------------------------------------
def test_reserve_is_idempotent_by_rid(ledger: Any) -> None:
    _, first = ledger.try_reserve(chain(100), rid="r1")
    _, again = ledger.try_reserve(chain(100), rid="r1")
    assert first.status is ReserveStatus.OK and again.status is ReserveStatus.DUP
    assert again.expires_at_ms == first.expires_at_ms
    assert books(ledger)[ORG] == (0, 100)
    ledger.commit("r1", {"cost": 50})
    _, late = ledger.try_reserve(chain(100), rid="r1")
    assert late.status is ReserveStatus.SETTLED
    assert books(ledger)[ORG] == (50, 0)


def test_settle_at_most_once(ledger: Any) -> None:
    rid = ledger.reserve(chain(100))
    assert ledger.commit(rid, {"cost": 70}).status is SettleStatus.OK
    again = ledger.commit(rid, {"cost": 90})
    assert again.status is SettleStatus.SETTLED and again.charged[ORG] == 70
    assert ledger.release(rid).status is SettleStatus.SETTLED
    assert ledger.expire(rid).status is SettleStatus.SETTLED
    assert books(ledger)[ORG] == (70, 0)
    assert_reconciled(ledger)


def test_unknown_rid(ledger: Any) -> None:
    assert ledger.commit("never-made", {"cost": 1}).status is SettleStatus.UNKNOWN
    assert ledger.release("never-made").status is SettleStatus.UNKNOWN
    assert ledger.extend("never-made", 10) is False


# -- expiry: crashed holders do not leak budget ----------------------------------------
def test_expired_hold_is_released_by_the_reaper(ledger: Any, clock: ManualClock) -> None:
    rid = ledger.reserve(chain(100), ttl_s=10)
    clock.advance(9.9)
    assert ledger.reap() == 0
    clock.advance(0.2)
    assert ledger.reap() == 1
    assert books(ledger)[ORG] == (0, 0)
    assert ledger.hold(rid).state is HoldState.EXPIRED
    late = ledger.commit(rid, {"cost": 100})  # the worker came back after its deadline
    assert late.status is SettleStatus.SETTLED
    assert_reconciled(ledger)


def test_expired_hold_with_charge_policy_is_charged_in_full(
    ledger: Any, clock: ManualClock
) -> None:
    rid = ledger.reserve(chain(100), ttl_s=5, on_expiry=OnExpiry.CHARGE)
    clock.advance(6)
    assert ledger.reap() == 1
    assert books(ledger)[ORG] == (100, 0)
    assert ledger.hold(rid).state is HoldState.EXPIRED_CHARGE


def test_extend_pushes_the_deadline(ledger: Any, clock: ManualClock) -> None:
    rid = ledger.reserve(chain(100), ttl_s=10)
    clock.advance(8)
    assert ledger.extend(rid, 10) is True
    clock.advance(8)
    assert ledger.reap() == 0
    clock.advance(3)
    assert ledger.reap() == 1


def test_reap_takes_oldest_first_and_respects_its_batch(ledger: Any, clock: ManualClock) -> None:
    rids = [ledger.reserve(chain(10), ttl_s=1 + i) for i in range(5)]
    clock.advance(10)
    assert ledger.reap(limit=2) == 2
    assert [ledger.hold(r).state for r in rids[:2]] == [HoldState.EXPIRED] * 2
    assert ledger.hold(rids[2]).state is HoldState.HELD
    assert ledger.reap() == 3


# -- windows --------------------------------------------------------------------------------
def test_hold_settles_against_the_window_it_was_made_in(ledger: Any, clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC))

    def day_line(amount: int) -> LineRequest:
        now = clock.now_ms()
        end = window_end(Window.DAY, now)
        assert end is not None
        return LineRequest(
            LineKey("org:acme", window_id(Window.DAY, now), "cost"),
            100,
            amount,
            int(end.timestamp() * 1000),
        )

    late_night = ledger.reserve([day_line(80)])
    with pytest.raises(CostBudgetExceeded) as info:
        ledger.reserve([day_line(30)])
    assert info.value.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    clock.advance(60)  # past midnight: a new day line with the whole budget
    morning = ledger.reserve([day_line(90)])
    ledger.commit(late_night, {"cost": 75})
    ledger.commit(morning, {"cost": 5})
    by_window = {line.key.window: line.spent for line in ledger.lines()}
    assert by_window == {"d2026-03-31": 75, "d2026-04-01": 5}


# -- overrun: recorded, flagged, blocking ---------------------------------------------------
def test_overrun_is_recorded_and_blocks_the_line(ledger: Any) -> None:
    rid = ledger.reserve(chain(100))
    outcome = ledger.commit(rid, {"cost": 130})
    assert outcome.status is SettleStatus.OVERRUN
    state = {line.key: line for line in ledger.lines()}
    assert state[ORG].spent == 130 and state[ORG].overrun == 30
    assert state[ORG].blocked == "overrun"
    with pytest.raises(CostBudgetExceeded) as info:
        ledger.reserve(chain(1))  # room is left, but the line is blocked
    assert info.value.reason == "overrun" and "overran" in str(info.value)
    for key in (ORG, TEAM, RUN):
        ledger.block(key, None)  # an operator clears it
    ledger.reserve(chain(1))
    assert_reconciled(ledger)


# -- tombstones -------------------------------------------------------------------------------
def test_tombstones_answer_late_retries_until_purged(ledger: Any, clock: ManualClock) -> None:
    rid = ledger.reserve(chain(100))
    ledger.commit(rid, {"cost": 40})
    clock.advance(3600)
    assert ledger.commit(rid, {"cost": 40}).status is SettleStatus.SETTLED
    assert ledger.hold(rid).charged[ORG] == 40
    assert ledger.purge(clock.now_ms()) == 1
    assert ledger.hold(rid) is None
    assert ledger.commit(rid, {"cost": 40}).status is SettleStatus.UNKNOWN
    assert books(ledger)[ORG] == (40, 0)


# -- limits and kill switch -------------------------------------------------------------------
def test_operator_limit_wins_until_cleared(ledger: Any) -> None:
    ledger.reserve(chain(100))
    ledger.set_limit(ORG, 150)
    with pytest.raises(CostBudgetExceeded):
        ledger.reserve(chain(60))
    ledger.set_limit(ORG, None)
    ledger.reserve(chain(60))
    assert {line.key: line.limit for line in ledger.lines()}[ORG] == 1000


def test_policy_limit_change_applies_on_next_reserve(ledger: Any) -> None:
    ledger.reserve(chain(100))
    with pytest.raises(CostBudgetExceeded):
        ledger.reserve(chain(100, limits=(150, 500, 300, 10_000)))
    assert {line.key: line.limit for line in ledger.lines()}[ORG] == 1000


def test_killed_line_denies(ledger: Any) -> None:
    ledger.block(TEAM, "killed")
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(chain(1))
    assert info.value.reason == "killed" and info.value.scope == "team:acme/search"


# -- bad input writes nothing ----------------------------------------------------------------
@pytest.mark.parametrize(
    "lines",
    [
        [LineRequest(ORG, 100, -1)],
        [LineRequest(ORG, -5, 1)],
        [LineRequest(ORG, 100, 2**70)],
        [LineRequest(ORG, 100, 1), LineRequest(ORG, 100, 1)],
        [LineRequest(LineKey("", "total", "cost"), 100, 1)],
    ],
    ids=["negative-amount", "negative-limit", "huge", "duplicate-line", "no-scope"],
)
def test_bad_reserve_is_refused_and_writes_nothing(ledger: Any, lines: list[LineRequest]) -> None:
    with pytest.raises(ConfigurationError):
        ledger.reserve(lines)
    assert ledger.lines() == [] and ledger.events(0, 10) == []


def test_bad_settle_is_refused_and_writes_nothing(ledger: Any) -> None:
    rid = ledger.reserve(chain(100))
    with pytest.raises(ConfigurationError):
        ledger.commit(rid, {"cost": -1})
    with pytest.raises(ConfigurationError):
        ledger.reserve(chain(1), ttl_s=0)
    with pytest.raises(ConfigurationError):
        ledger.commit("", None)
    assert ledger.hold(rid).state is HoldState.HELD


def test_holds_listing_by_scope_prefix(ledger: Any) -> None:
    a = ledger.reserve(chain(10))
    b = ledger.reserve([LineRequest(LineKey("org:other", "total", "cost"), 100, 5)])
    assert {h.rid for h in ledger.holds("org:")} == {a, b}
    assert {h.rid for h in ledger.holds("team:acme")} == {a}
    ledger.release(a)
    assert {h.rid for h in ledger.holds()} == {b}


# -- exact reads ------------------------------------------------------------------------------
def test_read_lines_reads_exactly_the_named_lines(ledger: Any) -> None:
    ledger.reserve(chain(100, 40))
    ledger.set_limit(TEAM, 450)
    never = LineKey("org:never-used", "total", "cost")
    org, missing, tokens, team = ledger.read_lines([ORG, never, RUN_TOKENS, TEAM])
    assert (org.spent, org.held, org.limit) == (0, 100, 1000)
    assert missing is None
    assert (tokens.held, tokens.remaining) == (40, 10_000 - 40)
    assert team.limit == 450
    assert ledger.read_lines([]) == []


def test_books_a_reserve_returns_are_the_books_after_it(ledger: Any) -> None:
    """
    A backend that returns the lines' books with a granted reserve (Redis) returns them as
    ``read_lines`` then reads them: with the reserve's own amounts, an operator's limit,
    an overrun and a charge-now reserve. Others return None.
    """
    ledger.set_limit(TEAM, 450)
    rid = ledger.reserve(chain(100, 40))
    ledger.commit(rid, {"cost": 120, "tokens": 40})  # an overrun of 20 on every cost line
    ledger.block(ORG, None)
    ledger.block(TEAM, None)
    ledger.block(RUN, None)
    for charge_now in (False, True):
        lines = chain(30, 5)
        _rid, outcome = ledger.try_reserve(lines, charge_now=charge_now)
        assert outcome.status is ReserveStatus.OK
        if outcome.books is None:
            assert getattr(ledger.storage, "scheme", None) != "redis"  # Redis always says
            continue
        assert list(outcome.books) == ledger.read_lines([line.key for line in lines])
        assert [state.key for state in outcome.books] == [line.key for line in lines]
        assert len(outcome.books) == len(lines)
        assert outcome.books[1].limit == 450
        assert outcome.books[0].overrun == 20
