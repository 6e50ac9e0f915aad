"""The pure admission planner: caps, room, floor, probes, context bound, choices, timeouts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from execbudget import CostBudgetExceeded, OutputBudgetExceeded
from execbudget.invocation import CallRequest, Plan, plan_call
from execbudget.invocation._plan import request_timeout, should_downgrade
from execbudget.policy import CallCaps
from execbudget.pricing import ModelPrice, max_output_for, worst_case_for
from execbudget.units import money_to_units

PRICE = ModelPrice(
    model="m",
    provider="custom",
    input_per_mtok=Decimal("1"),
    output_per_mtok=Decimal("4"),
    context_window=10_000,
    source="test",
)
NO_CAPS = CallCaps()


def req(inputs: int = 100, requested: int | None = 500, **kw: object) -> CallRequest:
    return CallRequest(model="m", input_tokens=inputs, requested_output=requested, **kw)  # type: ignore[arg-type]


def plan(request: CallRequest, **kw: object) -> Plan:
    result = plan_call(request, price=PRICE, caps=kw.pop("caps", NO_CAPS), **kw)  # type: ignore[arg-type]
    assert isinstance(result, Plan), result
    return result


def test_the_callers_value_is_held_as_is_when_not_sized() -> None:
    p = plan(req(), room={"cost": 1}, sized=False)
    assert (p.send_output, p.allowance, p.kind, p.bound_by) == (500, 500, "fixed", "requested")
    assert p.worst_cost == worst_case_for(PRICE, 100, 500)
    assert p.amounts == {
        "cost": p.worst_cost,
        "tokens": 600,
        "input_tokens": 100,
        "output_tokens": 500,
        "calls": 1,
    }


def test_output_cap_always_lowers() -> None:
    p = plan(req(), caps=CallCaps(max_output_tokens=64), room=None, sized=False)
    assert (p.send_output, p.bound_by, p.kind) == (64, "cap", "fixed")


def test_input_cap_denies() -> None:
    result = plan_call(
        req(inputs=2_000),
        price=PRICE,
        caps=CallCaps(max_input_tokens=1_000),
        room=None,
        sized=False,
    )
    assert isinstance(result, OutputBudgetExceeded)
    assert (result.reason, result.dimension) == ("cap", "input_tokens")


def test_sized_from_cost_room_is_exact() -> None:
    room = {"cost": money_to_units(Decimal("0.001"))}
    p = plan(req(), room=room, sized=True)
    expected = max_output_for(PRICE, 100, Decimal("0.001"))
    assert p.send_output == expected and p.kind == "sized" and p.bound_by == "room:cost"
    assert money_to_units(p.worst_cost) <= room["cost"]
    assert money_to_units(worst_case_for(PRICE, 100, expected + 1)) > room["cost"]


def test_sized_from_token_rooms() -> None:
    assert plan(req(), room={"tokens": 350}, sized=True).send_output == 250
    assert plan(req(), room={"output_tokens": 42}, sized=True).send_output == 42
    # the caller's smaller value still wins
    assert plan(req(requested=10), room={"tokens": 350}, sized=True).send_output == 10


def test_below_the_floor_a_sized_plan_becomes_a_probe_at_the_floor() -> None:
    caps = CallCaps(min_output_tokens=50)
    p = plan(req(), caps=caps, room={"tokens": 120}, sized=True)
    assert (p.kind, p.send_output) == ("probe", 50)
    # a caller asking for less than the floor gets what they asked for
    p = plan(req(requested=5), caps=caps, room={"tokens": 102}, sized=True)
    assert (p.kind, p.send_output) == ("probe", 5)


def test_cost_cap_lowers_then_denies_below_the_floor() -> None:
    cap = money_to_units(worst_case_for(PRICE, 100, 40))
    p = plan(req(), caps=CallCaps(max_cost=cap), room=None, sized=False)
    assert (p.send_output, p.bound_by) == (40, "cost_cap")
    result = plan_call(
        req(),
        price=PRICE,
        caps=CallCaps(max_cost=cap, min_output_tokens=41),
        room=None,
        sized=False,
    )
    assert isinstance(result, CostBudgetExceeded) and result.reason == "cap"


def test_no_limits_leaves_the_request_unbounded() -> None:
    p = plan(req(requested=None), room={}, sized=True)
    assert (p.kind, p.send_output) == ("unbounded", None)


def test_a_budget_that_affords_more_than_the_context_sends_nothing_and_holds_the_context() -> None:
    p = plan(req(requested=None), room={"tokens": 10**9}, sized=True)
    assert p.send_output is None and p.allowance == 10_000 - 100 and p.bound_by == "context"


def test_default_max_tokens_applies_when_the_caller_gave_none() -> None:
    p = plan(req(requested=None), room={"tokens": 10**9}, sized=True, default_output=256)
    assert p.send_output == 256 and p.bound_by == "default"


def test_choices_multiply_the_allowance() -> None:
    p = plan(req(requested=100, choices=3), room={"output_tokens": 240}, sized=True)
    assert (p.send_output, p.allowance) == (80, 240)


def test_embeddings_hold_their_input_only() -> None:
    p = plan(req(requested=None, has_output=False), room={"cost": 1}, sized=True)
    assert (p.send_output, p.allowance, p.amounts["output_tokens"]) == (None, 0, 0)
    too_dear = plan_call(
        req(inputs=10_000, requested=None, has_output=False),
        price=PRICE,
        caps=CallCaps(max_cost=1),
        room=None,
        sized=False,
    )
    assert isinstance(too_dear, CostBudgetExceeded)


@pytest.mark.parametrize(
    ("caller", "cap", "left", "expected"),
    [
        (None, None, None, (None, False)),
        (30.0, None, None, (30.0, False)),
        (30.0, 10.0, None, (10.0, False)),
        (30.0, 10.0, 2.5, (2.5, True)),
        (None, None, -1.0, (0.001, True)),
    ],
)
def test_request_timeout(
    caller: float | None, cap: float | None, left: float | None, expected: tuple[object, bool]
) -> None:
    assert request_timeout(caller, cap, left) == expected


def test_only_money_and_token_denials_downgrade() -> None:
    def denial(dimension: str, reason: str) -> CostBudgetExceeded:
        return CostBudgetExceeded(
            scope="s", dimension=dimension, limit=1, spent=0, held=0, requested=2, reason=reason
        )

    assert should_downgrade(denial("cost", "limit"))
    assert should_downgrade(denial("tokens", "cap"))
    assert not should_downgrade(denial("calls", "limit"))
    assert not should_downgrade(denial("cost", "overrun"))
