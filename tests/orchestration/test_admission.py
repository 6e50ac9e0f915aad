"""
The admission generator without a ledger: it is pure, so a fake shell answers its I/O
requests and the decisions are checked directly (DESIGN §7, tenacity-style tests).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from execbudget import Enforcer, FanOutExceeded, ManualClock, PolicyError
from execbudget.enforcer import Decision, Hold
from execbudget.ledger import LineKey, LineState
from execbudget.orchestration._admission import (
    IO,
    ReadLines,
    Release,
    TryHold,
    admit,
    settings_for,
)
from execbudget.scopes import Frame

POLICY: dict[str, Any] = {
    "fan_out": {"item_cost": "0.01 USD"},
    "scopes": [
        {"match": "run:w", "limits": {"fan_out": 10, "cost": "1 USD", "concurrency": 2}},
        {"match": "run:est", "fan_out": {"item_cost": "0.25 USD", "on_excess": "truncate"}},
        {"match": "run:est", "fan_out": {"item_cost": "0.30 USD"}},
    ],
}


class Shell:
    """Answers the generator's requests from a table of line states; records what it did."""

    def __init__(self, frame: Frame, states: dict[str, tuple[int, int]], grant: bool = True):
        self.frame = frame
        self.states = states  # dimension → (spent, held) on the run's line
        self.grant = grant
        self.slots_left = 2  # the concurrency room
        self.requests: list[IO] = []

    def run(self, gen: Generator[IO, Any, Any]) -> Any:
        answer: Any = None
        while True:
            try:
                request = gen.send(answer)
            except StopIteration as stop:
                return stop.value
            self.requests.append(request)
            answer = self.answer(request)

    def answer(self, request: IO) -> Any:
        enforcer = self.frame.enforcer
        if isinstance(request, ReadLines):
            return [
                LineState(LineKey(self.frame.key, "total", dim), limit, *self.states[dim])
                for dim, limit in (("fan_out", 10), ("cost", 10**9))
                if dim in self.states
            ]
        if isinstance(request, TryHold):
            if not self.grant and "fan_out" in request.amounts:
                return Decision(
                    None,
                    FanOutExceeded(
                        scope=self.frame.key,
                        dimension="fan_out",
                        limit="10",
                        spent="9",
                        held="0",
                        requested=str(request.amounts["fan_out"]),
                    ),
                )
            if "concurrency" in request.amounts:
                if self.slots_left == 0:
                    return Decision(
                        None,
                        FanOutExceeded(
                            scope=self.frame.key,
                            dimension="concurrency",
                            limit="2",
                            spent="0",
                            held="2",
                            requested="1",
                        ),
                    )
                self.slots_left -= 1
            return Decision(Hold(enforcer, "h", [], dict(request.amounts), None))
        assert isinstance(request, Release)
        return None


@pytest.fixture
def frame() -> Frame:
    enforcer = Enforcer(POLICY, "memory://", clock=ManualClock())
    with enforcer.run("w") as run:
        return run.frame


def test_refuse_mode_with_a_sized_list_holds_without_reading(frame: Frame) -> None:
    shell = Shell(frame, {})
    settings = settings_for(frame, on_excess="refuse")
    settings = type(settings)(None, "refuse")  # no cost estimate: nothing to read
    admission = shell.run(admit(frame, range(5), settings, max_concurrency=None, default_workers=8))
    kinds = [type(r).__name__ for r in shell.requests]
    # the fan_out hold, then concurrency slots until the room (2) refuses the third
    assert kinds == ["TryHold"] * 4
    assert admission.report.admitted == 5 and admission.report.workers == 2


def test_truncate_reads_the_room_and_caps_by_count_and_cost(frame: Frame) -> None:
    shell = Shell(frame, {"fan_out": (4, 0), "cost": (900_000_000, 50_000_000)})
    settings = settings_for(frame, item_cost="0.01", on_excess="truncate")
    admission = shell.run(
        admit(frame, range(100), settings, max_concurrency=1, default_workers=None)
    )
    # 6 fit the fan_out room, but 0.05 USD of cost room pays for 5 at 0.01 each
    assert admission.report.admitted == 5 and "cost room" in (admission.report.reason or "")
    assert isinstance(shell.requests[0], ReadLines)


def test_a_lost_race_in_refuse_mode_is_the_ledgers_denial(frame: Frame) -> None:
    shell = Shell(frame, {}, grant=False)
    settings = type(settings_for(frame))(None, "refuse")
    with pytest.raises(FanOutExceeded) as info:
        shell.run(admit(frame, range(3), settings, max_concurrency=None, default_workers=None))
    assert info.value.spent == "9"


def test_the_estimate_comes_from_the_argument_the_scope_or_the_policy() -> None:
    enforcer = Enforcer(POLICY, "memory://")
    with enforcer.run("w") as run:
        assert settings_for(run.frame).item_cost == 10_000_000  # policy-wide 0.01
        assert settings_for(run.frame, item_cost="0.5").item_cost == 500_000_000
    with enforcer.run("est") as run:
        settings = settings_for(run.frame)
        assert settings.item_cost == 300_000_000  # two rules: the larger estimate wins
        assert settings.on_excess == "truncate"


def test_a_bad_estimate_in_the_policy_is_reported_with_its_path() -> None:
    with pytest.raises(PolicyError) as info:
        Enforcer({"scopes": [{"match": "run:x", "fan_out": {"item_cost": "lots"}}]})
    assert "scopes[0].fan_out.item_cost" in str(info.value)
