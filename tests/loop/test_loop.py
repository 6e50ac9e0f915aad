"""Loop guards: steps charged before each iteration, tool calls per execution, deadlines."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import execbudget
from execbudget import (
    DeadlineExceeded,
    Enforcer,
    ManualClock,
    StepBudgetExceeded,
)

POLICY: dict[str, Any] = {
    "scopes": [
        {"match": "run:agent", "limits": {"steps": 3, "tool_calls": 4, "time": "10s"}},
        {"match": "tool:search", "limits": {"tool_calls": {"day": 2}}},
    ]
}


@pytest.fixture
def enforcer() -> Enforcer:
    return Enforcer(POLICY, "memory://", clock=ManualClock())


def spent(enforcer: Enforcer, dim: str) -> dict[str, int]:
    return {
        line.key.scope.split("#")[0]: line.spent
        for line in enforcer.status()
        if line.key.dimension == dim
    }


def test_a_step_is_charged_before_its_iteration_runs(enforcer: Enforcer) -> None:
    bodies = []
    with enforcer.run("agent") as run, pytest.raises(StepBudgetExceeded) as info:
        for step in run.steps():
            bodies.append(step)
    assert bodies == [1, 2, 3]  # the 4th iteration was refused before its body ran
    assert info.value.dimension == "steps" and info.value.requested == "1"
    assert spent(enforcer, "steps") == {"run:agent": 3}


def test_a_quiet_loop_ends_and_keeps_the_denial(enforcer: Enforcer) -> None:
    with enforcer.run("agent") as run:
        steps = run.steps(quiet=True)
        assert [s for s in steps] == [1, 2, 3]
        assert steps.count == 3 and isinstance(steps.denial, StepBudgetExceeded)
        # winding down is not free: there is no step left for a hidden extra iteration
        with pytest.raises(StepBudgetExceeded):
            run.step()


def test_a_quiet_loop_still_raises_at_the_deadline(enforcer: Enforcer) -> None:
    clock = enforcer.clock
    assert isinstance(clock, ManualClock)
    with enforcer.run("agent") as run, pytest.raises(DeadlineExceeded) as info:
        for _ in run.steps(quiet=True):
            clock.advance(6)  # the second step starts 6 s in; the third 12 s in
    assert "elapsed 12.000s, limit 10s" in str(info.value)


async def test_async_steps(enforcer: Enforcer) -> None:
    seen = []
    async with enforcer.run("agent") as run:
        async for step in run.steps(quiet=True):
            seen.append(step)
    assert seen == [1, 2, 3]


def test_tool_calls_count_per_execution_and_deny_before_the_body(enforcer: Enforcer) -> None:
    ran: list[str] = []

    @execbudget.tool
    def lookup(q: str) -> str:
        ran.append(q)
        return q.upper()

    with enforcer.run("agent"):
        assert [lookup(q) for q in "abcd"] == ["A", "B", "C", "D"]
        with pytest.raises(StepBudgetExceeded) as info:
            lookup("e")
    assert ran == ["a", "b", "c", "d"]
    assert info.value.dimension == "tool_calls"
    assert lookup("outside any run") == "OUTSIDE ANY RUN"  # not budgeted outside a scope


async def test_parallel_async_tool_calls_count_one_each(enforcer: Enforcer) -> None:
    async with enforcer.run("agent") as run:

        async def fetch(i: int) -> int:
            await asyncio.sleep(0)
            return i

        guarded = run.tool(fetch)
        results = await asyncio.gather(*(guarded(i) for i in range(6)), return_exceptions=True)
    assert sorted(r for r in results if isinstance(r, int)) == [0, 1, 2, 3]
    assert sum(isinstance(r, StepBudgetExceeded) for r in results) == 2
    assert spent(enforcer, "tool_calls") == {"run:agent": 4}


def test_a_bound_tool_charges_its_run_from_a_plain_thread(enforcer: Enforcer) -> None:
    with enforcer.run("agent") as run:
        guarded = run.tool(lambda: execbudget.current(), name="probe")
        box: list[object] = []
        thread = threading.Thread(target=lambda: box.append(guarded()))
        thread.start()
        thread.join()
    assert box == [None]  # the thread has no scope, yet the call was charged to the run
    assert spent(enforcer, "tool_calls") == {"run:agent": 1}


def test_a_tool_named_in_the_policy_has_its_own_line(enforcer: Enforcer) -> None:
    @execbudget.tool(name="search")
    def search() -> None:
        return None

    with enforcer.run("agent"):
        search()
    with enforcer.run("agent"):  # another run: its own tool_calls, but the same tool line
        search()
        with pytest.raises(StepBudgetExceeded) as info:
            search()
    assert info.value.scope == "tool:search" and info.value.window.startswith("d")
    assert spent(enforcer, "tool_calls") == {"run:agent": 1, "tool:search": 2}
