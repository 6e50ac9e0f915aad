"""Fan-out: admission before any branch starts, truncation reports, concurrency, branches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import execbudget
from execbudget import (
    Enforcer,
    FanOutExceeded,
    ManualClock,
    StepBudgetExceeded,
)
from execbudget.errors import ConfigurationError

POLICY: dict[str, Any] = {
    "scopes": [
        {"match": "run:batch", "limits": {"fan_out": 10, "concurrency": 3, "cost": "1.00 USD"}},
        {
            "match": "run:cheap",
            "limits": {"fan_out": 100, "cost": "0.10 USD"},
            "fan_out": {"item_cost": "0.02 USD"},
        },
        {"match": "branch:batch", "limits": {"steps": 2}},
    ]
}


@pytest.fixture(params=["memory", "sqlite"])
def enforcer(request: pytest.FixtureRequest, tmp_path: Path) -> Enforcer:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/l.db"
    return Enforcer(POLICY, url, clock=ManualClock())


def line(enforcer: Enforcer, dim: str, scope: str = "run:") -> tuple[int, int]:
    found = [s for s in enforcer.status(scope) if s.key.dimension == dim]
    return sum(s.spent for s in found), sum(s.held for s in found)


def test_ten_thousand_items_instead_of_ten_are_refused_before_any_branch(
    enforcer: Enforcer,
) -> None:
    calls: list[int] = []
    with enforcer.run("batch") as run, pytest.raises(FanOutExceeded) as info:
        run.map(calls.append, range(10_000))
    assert calls == []
    assert info.value.dimension == "fan_out" and info.value.requested == "10,000"
    assert info.value.limit == "10"
    assert line(enforcer, "fan_out") == (0, 0)


def test_a_generator_is_not_drained_to_be_refused(enforcer: Enforcer) -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    with enforcer.run("batch") as run, pytest.raises(FanOutExceeded) as info:
        run.map(lambda x: x, endless())
    assert pulled == 11  # the room plus one, to tell "full" from "too many"
    assert "more than 11 branches" in str(info.value)


def test_truncation_runs_the_room_and_reports_it(enforcer: Enforcer) -> None:
    with enforcer.run("batch") as run:
        result = run.map(lambda x: x * 2, range(10_000), on_excess="truncate")
    assert result == [x * 2 for x in range(10)]
    report = result.report
    assert (report.offered, report.admitted, report.started, report.truncated) == (
        10_000,
        10,
        10,
        True,
    )
    assert report.reason is not None and "fan_out room" in report.reason
    assert line(enforcer, "fan_out") == (10, 0)


def test_truncation_from_the_policy() -> None:
    enforcer = Enforcer({**POLICY, "fan_out": {"on_excess": "truncate"}}, "memory://")
    with enforcer.run("batch") as run:
        assert run.map(str, range(50)).report.admitted == 10


def test_projected_cost_refuses_before_the_first_branch(enforcer: Enforcer) -> None:
    calls: list[int] = []
    with enforcer.run("batch") as run:
        with pytest.raises(FanOutExceeded) as info:
            run.map(calls.append, range(10), item_cost="0.15 USD")  # 1.50 > 1.00
        assert calls == [] and info.value.dimension == "cost"
        assert info.value.requested == "1.5 USD" and info.value.reason == "projected"
        result = run.map(calls.append, range(10), item_cost="0.15", on_excess="truncate")
    assert result.report.admitted == 6 and result.report.projected_cost == Decimal("0.9")
    assert len(calls) == 6


def test_projection_counts_what_is_already_held(enforcer: Enforcer) -> None:
    with enforcer.run("batch") as run:
        hold = run.hold({"cost": "0.95"})  # a model call in flight
        with pytest.raises(FanOutExceeded) as info:
            run.map(str, range(3), item_cost="0.02")
        assert info.value.held == "0.95 USD"
        hold.release()
        run.map(str, range(3), item_cost="0.02")


def test_the_item_cost_from_a_scope_rule(enforcer: Enforcer) -> None:
    with enforcer.run("cheap") as run:
        with pytest.raises(FanOutExceeded):
            run.map(str, range(6))  # 6 × 0.02 > 0.10
        assert run.map(str, range(5)).report.projected_cost == Decimal("0.1")


def test_concurrency_is_held_per_worker_and_released(enforcer: Enforcer) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(x: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return x

    with enforcer.run("batch") as run:
        result = run.map(work, range(9), max_concurrency=8)
        assert result.report.workers == 3  # lowered to the concurrency room
        assert line(enforcer, "concurrency") == (0, 0)
    assert peak <= 3 and result == list(range(9))


def test_each_branch_is_a_child_scope_of_the_run(enforcer: Enforcer) -> None:
    def work(x: int) -> str:
        scope = execbudget.current()
        assert scope is not None
        scope.step()
        scope.step()
        return scope.frame.key  # current() is a view: its frame has the instance

    with enforcer.run("batch") as run:
        keys = run.map(work, range(4))
        assert all(k.startswith("branch:batch#") for k in keys) and len(set(keys)) == 4
        with pytest.raises(StepBudgetExceeded) as info:
            run.map(lambda _: [execbudget.current().step() for _ in range(3)], [1])  # type: ignore[union-attr]
        assert info.value.scope.startswith("branch:batch#")


def test_the_first_failure_stops_the_fan_out(enforcer: Enforcer) -> None:
    started: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        if x == 0:
            raise ValueError("boom")
        time.sleep(0.005)
        return x

    with enforcer.run("batch") as run:
        with pytest.raises(ValueError, match="boom"):
            run.map(work, range(10), max_concurrency=1)
        assert started == [0]
        assert line(enforcer, "fan_out") == (1, 0)  # settled with the branches started
        result = run.map(work, [0, 1], return_exceptions=True)
    assert isinstance(result[0], ValueError) and result[1] == 1


def test_bad_arguments(enforcer: Enforcer) -> None:
    with enforcer.run("batch") as run:
        with pytest.raises(ConfigurationError):
            run.map(str, [1], max_concurrency=0)
        with pytest.raises(ConfigurationError):
            run.map(str, [1], on_excess="drop")  # type: ignore[arg-type]
        assert run.map(str, []) == []


def test_a_branch_by_hand(enforcer: Enforcer) -> None:
    with enforcer.run("batch") as run:
        branches = [run.branch("batch") for _ in range(4)]
        scopes = [b.__enter__() for b in branches[:3]]
        assert line(enforcer, "concurrency") == (0, 3)
        with pytest.raises(FanOutExceeded) as info:
            branches[3].__enter__()
        assert info.value.dimension == "concurrency"
        assert line(enforcer, "fan_out") == (3, 0)  # the refused one spent no fan-out
        scopes[0].step()
        for b in reversed(branches[:3]):  # entered by hand: leave in reverse order
            b.__exit__(None, None, None)
        assert line(enforcer, "concurrency") == (0, 0)
        with run.branch() as b:
            assert execbudget.current().frame is b.frame  # type: ignore[union-attr]
        assert execbudget.current().frame is run.frame  # type: ignore[union-attr]


async def test_amap_runs_tasks_in_child_scopes(enforcer: Enforcer) -> None:
    async with enforcer.run("batch") as run:

        async def work(x: int) -> str:
            await asyncio.sleep(0)
            scope = execbudget.current()
            assert scope is not None
            return scope.frame.key

        result = await run.amap(work, range(10))
        assert result.report.workers == 3 and len(set(result)) == 10
        with pytest.raises(FanOutExceeded):
            await run.amap(work, range(1))  # the run's 10 branches are spent
    assert line(enforcer, "concurrency") == (0, 0)


async def test_amap_cancels_the_rest_on_the_first_failure(enforcer: Enforcer) -> None:
    cancelled = 0

    async def work(x: int) -> int:
        nonlocal cancelled
        if x == 0:
            await asyncio.sleep(0.01)
            raise ValueError("boom")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return x

    async with enforcer.run("batch") as run:
        with pytest.raises(ValueError):
            await run.amap(work, range(3))
    assert cancelled == 2
    assert line(enforcer, "concurrency") == (0, 0)


async def test_async_branch_by_hand(enforcer: Enforcer) -> None:
    async with enforcer.run("batch") as run:
        async with run.branch() as b:
            assert b.kind == "branch"
    assert line(enforcer, "fan_out") == (1, 0)


def test_racing_fan_outs_never_pass_the_count(tmp_path: Path) -> None:
    enforcer = Enforcer(
        {"scopes": [{"match": "workflow:w", "limits": {"fan_out": 40}}]},
        f"sqlite:///{tmp_path}/race.db",
    )
    admitted: list[int] = []
    lock = threading.Lock()
    with enforcer.scope("workflow", "w"):

        def one() -> None:
            with enforcer.run("r") as run:
                try:
                    result = run.map(str, range(7), on_excess="truncate")
                except FanOutExceeded:
                    return
                with lock:
                    admitted.append(result.report.admitted)

        threads = [threading.Thread(target=execbudget.bind(one)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(admitted) == 40  # 8 × 7 = 56 asked; exactly the 40 allowed ran
    assert line(enforcer, "fan_out", "workflow:") == (40, 0)


def test_a_workflow_handed_10000_items_makes_no_model_call(fake_provider: Any) -> None:
    """Each item would make a held model call; the fan-out is refused before the first."""
    execbudget.configure(
        {"scopes": [{"match": "run:summarise", "limits": {"fan_out": 10, "cost": "0.01 USD"}}]},
        "memory://",
    )
    client = execbudget.wrap(fake_provider.openai())

    def summarise(item: int) -> str:
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"summarise {item}"}],
            max_tokens=16,
        )
        return str(reply.choices[0].message.content)

    items = list(range(10_000))  # a bug upstream: 10,000 instead of 10
    with execbudget.run("summarise") as run:
        with pytest.raises(FanOutExceeded):
            run.map(summarise, items)
        with pytest.raises(FanOutExceeded) as info:
            run.map(summarise, items[:10], item_cost="0.002 USD")  # 0.02 projected > 0.01
        assert info.value.dimension == "cost"
        assert fake_provider.requests == []
        result = run.map(summarise, items, on_excess="truncate", max_concurrency=4)
    assert len(result) == 10 and len(fake_provider.requests) == 10
    execbudget.configure(None, "memory://")
