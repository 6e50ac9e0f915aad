"""Derived caps, the what-if under them, the guaranteed worst case and the hold replay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from execbudget.modeling import (
    Analysis,
    CapSet,
    DerivedCap,
    analyze,
    graph_from_dict,
    nice_up,
    worst_case,
)
from execbudget.modeling.common import CALLS, COST, N_DIMS
from execbudget.modeling.simcaps import sequence

from .conftest import PRICES, build


def test_nice_up_rounds_up_to_two_significant_digits() -> None:
    assert nice_up(0.04231) == 0.043
    assert nice_up(31_234) == 32_000
    assert nice_up(0.5) == 0.5
    assert nice_up(187) == 190
    assert nice_up(114.5, 3) == 115


def test_sequence_denies_hard_limits_and_clamps_money() -> None:
    seg = np.array([0, 0, 0, 1, 1])
    use = np.zeros((5, N_DIMS))
    use[:, CALLS] = 1
    use[:, COST] = [0.4, 0.4, 0.4, 0.1, 0.1]
    need = use.copy()
    need[:, COST] = 0.05  # a model call needs only its input + one output token to start
    remaining = np.full((2, N_DIMS), np.inf)
    remaining[0, COST] = 1.0  # visit 0: the third call is clamped to what is left
    remaining[1, CALLS] = 1  # visit 1: the second call is denied
    keep, used, denied, clamped = sequence(seg, use, need, remaining)
    assert keep.tolist() == [True, True, True, True, False]
    assert used[2, COST] == pytest.approx(0.2)
    assert denied.tolist() == [-1, CALLS]
    assert clamped.tolist() == [True, False]


WORKFLOW = {
    "name": "capped",
    "entry": "ask",
    "envelope": {"q": {"dist": "lognormal", "median": 2000, "p99": 30000}},
    "nodes": {
        "ask": {
            "kind": "model",
            "model": "big",
            "input_tokens": {"from": "q", "plus": 1000},
            "output_tokens": {"dist": "lognormal", "median": 500, "p99": 5000},
            "retry": {"p_fail": 0.05, "max_retries": 3},
            "next": "agent",
        },
        "agent": {
            "kind": "agent_loop",
            "model": "big",
            "context": {
                "initial": {"from": "q", "plus": 3000},
                "growth_per_step": {"dist": "lognormal", "median": 1500, "sigma": 0.8},
                "max": 120000,
            },
            "output_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.6},
            "continue_p": 0.85,
            "stuck": {"share": 0.1, "continue_p": 0.96},
            "prompt_cache": True,
            "tool_calls_per_step": 1,
            "tool_cost": 0.001,
            "next": [{"to": "agent", "p": 0.1}, {"to": "done", "p": "rest"}],
        },
    },
    "volume": {"runs_per_day": 1000},
}


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyze(graph_from_dict(WORKFLOW), runs=40_000, seed=2, pricer=PRICES, truncation=0.005)


def test_every_used_dimension_gets_a_cap(analysis: Analysis) -> None:
    keys = set(analysis.caps.caps)
    assert {"cost", "tokens", "steps", "calls", "retries", "tool_calls"} <= keys
    assert {"per_call.max_input_tokens", "per_call.max_output_tokens", "per_call.max_cost"} <= keys
    assert "fan_out" not in keys  # nothing fans out
    assert analysis.caps.depth == 1
    assert analysis.caps.daily_cost is not None
    mu, sd = analysis.capped.mean().value, analysis.capped.sd().value
    assert analysis.caps.daily_cost >= 1000 * mu + 3.09 * sd * math.sqrt(1000)


def test_counter_caps_hold_their_truncation_target(analysis: Analysis) -> None:
    eps = analysis.caps.truncation
    for key in ("steps", "calls", "retries", "tool_calls"):
        cap = analysis.caps.caps[key]
        assert cap.exact_exceed is not None and cap.exact_exceed <= eps
        # the smallest such cap: one less would exceed the target
        assert analysis.counts_exact[key].exceed(cap.value - 1) > eps


def test_the_what_if_respects_every_cap(analysis: Analysis) -> None:
    wi, caps = analysis.whatif, analysis.caps
    assert wi.max() <= caps.value("cost") * (1 + 1e-9)  # type: ignore[operator]
    for key in ("steps", "calls", "retries", "tool_calls"):
        assert wi.counters[key].max() <= caps.value(key)
    assert wi.maxima["max_input_tokens"].max() <= caps.value("per_call.max_input_tokens") * 1.006  # type: ignore[operator]
    assert wi.maxima["max_output_tokens"].max() <= caps.value("per_call.max_output_tokens") * 1.006  # type: ignore[operator]
    assert 0 < wi.truncation_rate < 0.1
    assert wi.mean().value <= analysis.sim.mean().value


def test_the_worst_case_bounds_every_capped_run(analysis: Analysis) -> None:
    worst = analysis.worst
    assert analysis.whatif.max() <= worst.guaranteed * (1 + 1e-9)
    assert worst.guaranteed == min(worst.structural, analysis.caps.value("cost"))  # type: ignore[type-var]


def test_worst_case_walk_by_hand() -> None:
    model = build(
        {
            "a": {
                "kind": "model",
                "cost": 0.01,
                "retry": {"p_fail": 0.2, "max_retries": 2},
                "next": "b",
            },
            "b": {
                "kind": "model",
                "cost": 0.02,
                "next": [{"to": "b", "p": 0.5}, {"to": "done", "p": "rest"}],
            },
        }
    )
    caps = CapSet(truncation=0.001)
    caps.caps["calls"] = DerivedCap("calls", 3, "count", "")
    caps.caps["retries"] = DerivedCap("retries", 2, "count", "")
    # the dearest walk with 3 calls: a once, then b twice
    assert worst_case(model, caps).structural == pytest.approx(0.05)
    caps.caps["cost"] = DerivedCap("cost", 0.045, "money", "")
    w = worst_case(model, caps)
    assert w.guaranteed == 0.045 and "cost cap" in w.binding
    del caps.caps["calls"]
    assert math.isinf(worst_case(model, caps).structural)


def test_an_input_ceiling_past_a_price_tier_is_flagged() -> None:
    from execbudget.modeling.caps import _cliff_warnings

    model = build(
        {"a": {"kind": "model", "model": "big", "input_tokens": 1000, "output_tokens": 10}}
    )
    assert _cliff_warnings(model, 150_000) == []
    (warning,) = _cliff_warnings(model, 250_000)
    assert "200,000-token price tier of a" in warning and "2×" in warning
