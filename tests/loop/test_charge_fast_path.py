"""
The charge hot path (a step, a retry, a tool call): a repeated plan is validated by the
ledger once, then reserved without re-checking; everything it guarantees still holds.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from execbudget import BudgetExceeded, ConfigurationError, Enforcer, ManualClock, StepBudgetExceeded
from execbudget.ledger import Ledger, LineKey, LineRequest, OnExpiry
from execbudget.ledger._memory import MemoryStorage
from execbudget.scopes import plan_for

POLICY: dict[str, Any] = {
    "scopes": [
        {"match": "org:acme", "limits": {"steps": 5}},
        {"match": "run:agent", "limits": {"steps": 3, "retries": 2, "tool_calls": 10}},
    ]
}


def test_step_limits_stay_exact_and_every_charge_is_logged() -> None:
    enforcer = Enforcer(POLICY, "memory://", clock=ManualClock())
    with enforcer.run("agent") as run:
        for _ in range(3):
            run.step()
        with pytest.raises(StepBudgetExceeded):
            run.step()
        run.retry()
        run.retry()
        with pytest.raises(BudgetExceeded):
            run.retry()
    kinds = [e.kind for e in enforcer.ledger.events()]
    assert kinds == ["reserve", "commit"] * 5  # 3 steps and 2 retries, the denials write nothing


def test_a_denial_on_the_outer_line_leaves_the_inner_untouched() -> None:
    enforcer = Enforcer(POLICY, "memory://", clock=ManualClock())
    with enforcer.scope("org", "acme"):
        with enforcer.run("agent") as first:
            for _ in range(3):
                first.step()
        with enforcer.run("agent") as second:
            second.step()
            second.step()
            with pytest.raises(StepBudgetExceeded) as denied:
                second.step()  # the org (5) refuses; the run's line (3) had room
            assert denied.value.scope == "org:acme"
    assert [ln.spent for ln in enforcer.status() if ln.key.scope == "org:acme"] == [5]
    runs = sorted(ln.spent for ln in enforcer.status() if ln.key.scope.startswith("run:"))
    assert runs == [2, 3]


def test_a_chain_naming_one_line_twice_is_refused_on_every_call() -> None:
    enforcer = Enforcer(POLICY, "memory://", clock=ManualClock())
    with enforcer.scope("org", "acme"), enforcer.scope("org", "acme") as inner:
        for _ in range(2):  # a refused plan is never marked as checked
            with pytest.raises(ConfigurationError):
                inner.step()
    assert enforcer.ledger.events() == []


def test_a_plan_is_checked_once_per_ttl() -> None:
    enforcer = Enforcer(POLICY, "memory://", clock=ManualClock())
    with enforcer.run("agent") as run:
        run.step()
        planned = plan_for(run.frame, {"steps": 1}, enforcer.clock.now_ms(), "UTC")
        assert planned.checked == (enforcer.policy.hold_ttl_s, 300_000)
        run.step()
        assert plan_for(run.frame, {"steps": 1}, enforcer.clock.now_ms(), "UTC") is planned


def test_steps_from_threads_never_overshoot() -> None:
    enforcer = Enforcer({"scopes": [{"match": "run:agent", "limits": {"steps": 500}}]}, "memory://")
    granted = []
    with enforcer.run("agent") as run:
        frame = run.frame

        def work() -> None:
            ok = 0
            for _ in range(200):
                try:
                    enforcer.charge({"steps": 1}, frame=frame)
                    ok += 1
                except StepBudgetExceeded:
                    pass
            granted.append(ok)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(granted) == 500
    assert [ln.spent for ln in enforcer.status()] == [500]


def test_reserve_checked_and_the_one_line_storage_path() -> None:
    ledger = Ledger(MemoryStorage())
    one = [LineRequest(LineKey("run:a", "total", "steps"), 2, 1, None)]
    two = [*one, LineRequest(LineKey("org:x", "total", "steps"), 1, 1, None)]
    assert ledger.reserve_checked("r1", one, 1000, OnExpiry.RELEASE, True).denial is None
    assert ledger.reserve_checked("r2", one, 1000, OnExpiry.RELEASE, True).denial is None
    denied = ledger.reserve_checked("r3", one, 1000, OnExpiry.RELEASE, True).denial
    assert denied is not None and denied.key == one[0].key
    # two lines, all or nothing: the second refuses, the first is not charged
    ledger.set_limit(one[0].key, 10)
    assert ledger.reserve_checked("r4", two, 1000, OnExpiry.RELEASE, False).denial is None
    assert ledger.reserve_checked("r5", two, 1000, OnExpiry.RELEASE, False).denial is not None
    spent = {ln.key.scope: (ln.spent, ln.held) for ln in ledger.lines()}
    assert spent == {"run:a": (2, 1), "org:x": (0, 1)}
