"""The runtime: scope chains, holds, charges, depth, deadlines, propagation, failure modes."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import execbudget
from execbudget import (
    ContextThreadPoolExecutor,
    CostBudgetExceeded,
    DeadlineExceeded,
    Enforcer,
    LedgerUnavailable,
    ManualClock,
    StepBudgetExceeded,
)
from execbudget.errors import ConfigurationError

POLICY: dict[str, Any] = {
    "scopes": [
        {"match": "org:acme", "limits": {"cost": {"day": "1.00 USD"}, "steps": 1000}},
        {"match": "team:acme/*", "limits": {"cost": "0.80 USD"}},
        {
            "match": "run:triage",
            "limits": {"cost": "0.50 USD", "steps": 5, "time": "10s", "depth": 2},
        },
        {"match": "run:sub", "limits": {"time": "60s", "steps": 100}},
    ]
}


@pytest.fixture(params=["memory://", "sqlite"])
def enforcer(request: pytest.FixtureRequest, tmp_path: Path) -> Enforcer:
    url = request.param if request.param != "sqlite" else f"sqlite:///{tmp_path}/l.db"
    return Enforcer(POLICY, url, clock=ManualClock())


def spent(enforcer: Enforcer) -> dict[str, int]:
    return {
        f"{line.key.scope.split('#')[0]}/{line.key.dimension}": line.spent
        for line in enforcer.status()
    }


def test_a_hold_lands_on_every_level_of_the_chain(enforcer: Enforcer) -> None:
    with enforcer.scope("org", "acme"), enforcer.scope("team", "acme/search"):
        with enforcer.run("triage") as run, run.hold({"cost": "0.30 USD"}) as hold:
            hold.actual = {"cost": Decimal("0.25")}
    assert spent(enforcer) == {
        "org:acme/cost": 250_000_000,
        "team:acme/search/cost": 250_000_000,
        "run:triage/cost": 250_000_000,
    }
    assert all(line.held == 0 for line in enforcer.status())


def test_denial_names_the_first_refusing_level_and_holds_nothing(enforcer: Enforcer) -> None:
    with enforcer.scope("org", "acme"), enforcer.scope("team", "acme/search"):
        with enforcer.run("triage") as run:
            run.hold({"cost": "0.45"})
        with enforcer.run("triage") as run:  # a new run: its own 0.50, but the team has 0.35
            with pytest.raises(CostBudgetExceeded) as info:
                run.hold({"cost": "0.40"})
            assert info.value.scope == "team:acme/search"
            assert info.value.requested == "0.4 USD" and info.value.held == "0.45 USD"
            decision = run.try_hold({"cost": "0.40"})
            assert not decision and isinstance(decision.denial, CostBudgetExceeded)
    held = [line.held for line in enforcer.status() if line.held]
    assert held == [45 * 10**7] * 3  # org, team and the first run: the denial added nothing


def test_hold_context_releases_on_error(enforcer: Enforcer) -> None:
    with enforcer.run("triage") as run:
        with pytest.raises(RuntimeError), run.hold({"cost": "0.40"}):
            raise RuntimeError("provider failed")
        run.hold({"cost": "0.50"}).commit({"cost": "0.01"})


def test_steps_are_charged_immediately_and_capped(enforcer: Enforcer) -> None:
    with enforcer.scope("org", "acme"), enforcer.run("triage") as run:
        for _ in range(5):
            run.step()
        with pytest.raises(StepBudgetExceeded) as info:
            run.step()
        assert info.value.dimension == "steps" and info.value.scope.startswith("run:triage#")
    assert spent(enforcer) == {"org:acme/steps": 5, "run:triage/steps": 5}


def test_a_child_deadline_is_never_later_than_its_parent(enforcer: Enforcer) -> None:
    clock = enforcer.clock
    assert isinstance(clock, ManualClock)
    with enforcer.run("triage") as run:  # 10 s
        clock.advance(4)
        with enforcer.run("sub") as sub:  # asks for 60 s, gets the 6 s left
            remaining = sub.remaining_time()
            assert remaining is not None and remaining == pytest.approx(6)
            clock.advance(6.5)
            with pytest.raises(DeadlineExceeded) as info:
                sub.step()
            assert info.value.scope == run.key
            assert "elapsed 10.500s, limit 10s" in str(info.value)


def test_depth_is_counted_and_capped(enforcer: Enforcer) -> None:
    with enforcer.run("triage") as outer:
        assert outer.depth == 1
        with enforcer.run("triage") as inner:
            assert inner.depth == 2
            with pytest.raises(StepBudgetExceeded) as info, enforcer.run("triage"):
                pass
            assert info.value.dimension == "depth"


def test_scope_propagates_to_asyncio_tasks_and_pool_threads(enforcer: Enforcer) -> None:
    async def in_task() -> str | None:
        scope = execbudget.current()
        return None if scope is None else scope.name

    with enforcer.run("triage"):
        assert asyncio.run(in_task()) == "triage"
        with ContextThreadPoolExecutor(2) as pool:
            assert pool.submit(lambda: execbudget.current().name).result() == "triage"  # type: ignore[union-attr]
        with ThreadPoolExecutor(2) as plain:
            bound = execbudget.submit(plain, lambda: execbudget.current().name)  # type: ignore[union-attr]
            assert bound.result() == "triage"
            assert plain.submit(execbudget.current).result() is None  # no helper, no scope


def test_concurrent_threads_never_pass_a_nearly_spent_budget(enforcer: Enforcer) -> None:
    granted = []
    lock = threading.Lock()
    with enforcer.run("sub") as run:  # 100 steps

        def worker() -> None:
            for _ in range(20):
                try:
                    run.step()
                except StepBudgetExceeded:
                    continue
                with lock:
                    granted.append(1)

        threads = [threading.Thread(target=execbudget.bind(worker)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(granted) == 100
    assert spent(enforcer)["run:sub/steps"] == 100


async def test_64_async_holds_on_one_budget_never_overspend(tmp_path: Path) -> None:
    enforcer = Enforcer(POLICY, f"sqlite:///{tmp_path}/a.db")
    async with enforcer.run("triage") as run:

        async def one() -> bool:
            try:
                hold = await run.ahold({"cost": "0.03"})
            except CostBudgetExceeded:
                return False
            await asyncio.sleep(0)
            await hold.acommit({"cost": "0.03"})
            return True

        results = await asyncio.gather(*(one() for _ in range(64)))
    assert sum(results) == 16  # 0.50 // 0.03
    assert spent(enforcer)["run:triage/cost"] == 16 * 30_000_000


async def test_async_deadline_cancels_the_body() -> None:
    enforcer = Enforcer(
        {"scopes": [{"match": "run:slow", "limits": {"time": "0.05s"}}]}, "memory://"
    )
    with pytest.raises(DeadlineExceeded):
        async with enforcer.run("slow"):
            await asyncio.Event().wait()  # would hang forever


def test_day_window_rolls_over_through_the_runtime(enforcer: Enforcer) -> None:
    clock = enforcer.clock
    assert isinstance(clock, ManualClock)
    with enforcer.scope("org", "acme"):
        hold = enforcer.hold({"cost": "0.90"})
        with pytest.raises(CostBudgetExceeded) as info:
            enforcer.hold({"cost": "0.20"})
        assert info.value.resets_at is not None
        clock.advance(86_400)
        enforcer.hold({"cost": "0.20"}).commit()
        hold.commit({"cost": "0.90"})
    windows = {line.key.window: line.spent for line in enforcer.status("org:")}
    assert windows == {"d2026-01-01": 900_000_000, "d2026-01-02": 200_000_000}


def test_bad_amounts_are_refused_and_write_nothing(enforcer: Enforcer) -> None:
    with enforcer.run("triage") as run:
        for bad in (
            {"cost": "-1"},
            {"cost": "NaN"},
            {"steps": -2},
            {"stepz": 1},
            {"time": 3},
            {"cost": "1 EUR"},
            {"tokens": 1.5},
        ):
            with pytest.raises(ConfigurationError):
                run.hold(bad)
    assert enforcer.status() == []


def test_a_repeated_plan_is_validated_once_per_ttl_but_a_callers_id_every_time(
    enforcer: Enforcer,
) -> None:
    """try_hold remembers that a plan passed the ledger's checks, for its TTL only."""
    amounts = {"cost": "0.01 USD", "steps": 1}
    with enforcer.run("triage"):
        for _ in range(2):
            enforcer.hold(amounts).commit()
        with pytest.raises(ConfigurationError, match="ttl"):
            enforcer.hold(amounts, ttl_s=400 * 86400)  # a TTL this plan never passed with
        with pytest.raises(ConfigurationError, match="reservation id"):
            enforcer.hold(amounts, rid="x" * 300)  # a caller's id is always checked
        enforcer.hold(amounts, rid="mine", ttl_s=30).release()
        enforcer.hold(amounts).commit()
        empty = enforcer.hold(amounts, rid="")  # an empty id means a fresh one, as before
        assert empty.rid
        empty.commit()
    assert spent(enforcer) == {"run:triage/cost": 40_000_000, "run:triage/steps": 4}


def test_unbudgeted_actions_need_no_ledger_round_trip(tmp_path: Path) -> None:
    enforcer = Enforcer(None, _unreachable(tmp_path))
    with enforcer.run("free") as run:
        run.step()  # no limit anywhere on the chain: nothing to hold, the ledger is not opened
        run.hold({"cost": "5 USD"}).commit()


def _unreachable(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return f"sqlite:///{blocker}/ledger.db"


def test_unreachable_ledger_fails_closed(tmp_path: Path) -> None:
    enforcer = Enforcer(POLICY, _unreachable(tmp_path))
    with enforcer.run("triage") as run, pytest.raises(LedgerUnavailable) as info:
        run.step()
    assert "Nothing was spent" in str(info.value)


def test_fail_open_is_an_explicit_opt_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    enforcer = Enforcer({**POLICY, "failure_mode": "open"}, _unreachable(tmp_path))
    with enforcer.run("triage") as run:
        hold = run.hold({"cost": "0.10"})
        assert hold.degraded
        hold.commit()
    assert "failing open" in caplog.text


def test_corrupt_ledger_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    garbage = b"this is not a sqlite database" * 100
    path.write_bytes(garbage)
    enforcer = Enforcer(POLICY, f"sqlite:///{path}")
    with enforcer.run("triage") as run, pytest.raises(LedgerUnavailable, match="not a database"):
        run.step()
    assert path.read_bytes() == garbage


def test_configure_sets_the_process_default(tmp_path: Path) -> None:
    enforcer = execbudget.configure(POLICY, f"sqlite:///{tmp_path}/d.db")
    try:
        with execbudget.run("triage") as run:
            assert execbudget.get_enforcer() is enforcer
            run.step()
            execbudget.hold({"cost": "0.01"}).release()
        assert spent(enforcer)["run:triage/steps"] == 1
    finally:
        execbudget.configure(None, "memory://")


def test_a_denial_reaps_expired_holds_of_crashed_workers_first(enforcer: Enforcer) -> None:
    clock = enforcer.clock
    assert isinstance(clock, ManualClock)
    with enforcer.run("sub") as run:  # no cost limit on run:sub; use the org's day budget
        with enforcer.scope("org", "acme"):
            enforcer.hold({"cost": "0.90"}, ttl_s=30)  # a worker holds this, then dies
            clock.advance(31)
            enforcer.hold({"cost": "0.50"}).commit()  # granted: the dead hold was reaped
    org = [line for line in enforcer.status("org:") if line.key.dimension == "cost"]
    assert [(line.spent, line.held) for line in org] == [(500_000_000, 0)]
    assert run.key


def test_current_is_the_open_scope_with_its_full_key(enforcer: Enforcer) -> None:
    assert execbudget.current() is None
    with enforcer.run("triage") as run:
        view = execbudget.current()
        assert view is not None and view.key == run.key and "#" in view.key
        assert view.depth == 1


def test_ledger_errors_never_show_a_password() -> None:
    from execbudget.ledger._ledger import redact

    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("postgresql://app:s3cret@db/x?schema=a") == "postgresql://app:***@db/x?schema=a"
    assert redact("sqlite:///l.db") == "sqlite:///l.db"
    ledger = execbudget.Ledger.from_url(
        "postgresql://app:s3cret@127.0.0.1:1/nowhere?timeout=1&migrate=off"
    )
    assert "s3cret" not in ledger.url
    with pytest.raises(LedgerUnavailable) as info:
        ledger.lines()
    assert "s3cret" not in str(info.value)


def test_threads_racing_to_the_first_use_share_one_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    """On memory:// a ledger per racing thread would be a budget per thread."""
    import time

    import execbudget.enforcer as enforcer_module

    opened = enforcer_module.Ledger.from_url

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)  # widen the window between the check and the assignment
        return opened(*args, **kwargs)

    monkeypatch.setattr(enforcer_module.Ledger, "from_url", slow_open)
    enforcer = Enforcer(POLICY, "memory://")
    start = threading.Barrier(8)
    ledgers: list[int] = []
    aledgers: list[int] = []

    def first_use() -> None:
        start.wait()
        ledgers.append(id(enforcer.ledger))
        aledgers.append(id(enforcer.aledger))

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(first_use) for _ in range(8)]:
            future.result()
    assert len(set(ledgers)) == 1 and len(set(aledgers)) == 1
    with enforcer.scope("org", "acme"):
        enforcer.charge({"cost": "0.25 USD"})
    (line,) = [s for s in enforcer.ledger.lines("org:acme") if s.key.dimension == "cost"]
    assert line.spent == 250_000_000  # the one ledger every thread saw has the charge
