"""Small graphs whose answers are known in closed form: the exact engine must hit them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from execbudget.modeling import distribution, exact_moments

from .conftest import build


def test_geometric_loop() -> None:
    p, c = 0.3, 0.004
    mom = exact_moments(
        build(
            {
                "v": {
                    "kind": "tool",
                    "cost": c,
                    "next": [{"to": "v", "p": p}, {"to": "done", "p": "rest"}],
                }
            }
        )
    )
    assert mom.mean[0] == pytest.approx(c / (1 - p), rel=1e-12)
    assert mom.var[0] == pytest.approx(c * c * p / (1 - p) ** 2, rel=1e-10)
    assert mom.visits["v"] == pytest.approx(1 / (1 - p))


def test_truncated_geometric_retries() -> None:
    p, r, f, c = 0.2, 3, 0.5, 0.01
    mom = exact_moments(
        build(
            {
                "a": {
                    "kind": "model",
                    "cost": c,
                    "retry": {"p_fail": p, "max_retries": r, "failed_cost": f},
                }
            }
        )
    )
    # success after j failures (prob (1-p) p^j): cost c(1 + f j); all r+1 fail: c f (r+1)
    probs = [(1 - p) * p**j for j in range(r + 1)] + [p ** (r + 1)]
    costs = [c * (1 + f * j) for j in range(r + 1)] + [c * f * (r + 1)]
    calls = [j + 1 for j in range(r + 1)] + [r + 1]
    mean = sum(q * x for q, x in zip(probs, costs, strict=True))
    var = sum(q * x * x for q, x in zip(probs, costs, strict=True)) - mean**2
    assert mom.mean[0] == pytest.approx(mean, rel=1e-12)
    assert mom.var[0] == pytest.approx(var, rel=1e-9)
    assert mom.mean[3] == pytest.approx(sum(q * k for q, k in zip(probs, calls, strict=True)))
    assert mom.p_fail == pytest.approx(p ** (r + 1))


def test_binomial_retries_over_independent_items() -> None:
    """Ten items, each retried at most once with p = 0.15: the retries are Binomial(10, 0.15)."""
    n, p = 10, 0.15
    model = build(
        {"fan": {"kind": "fan_out", "count": n, "item": "call"}},
        subgraphs={
            "call": {
                "entry": "x",
                "nodes": {
                    "x": {
                        "kind": "model",
                        "cost": 0.001,
                        "retry": {"p_fail": p, "max_retries": 1, "on_exhaust": "continue"},
                    }
                },
            }
        },
    )
    mom = exact_moments(model)
    assert mom.mean[4] == pytest.approx(n * p)
    assert mom.var[4] == pytest.approx(n * p * (1 - p))
    pmf = distribution(model, "retries").pmf
    assert pmf[: n + 1] == pytest.approx(stats.binom.pmf(np.arange(n + 1), n, p), abs=1e-12)


def test_compound_fan_out() -> None:
    k = {"dist": "negbin", "mean": 4, "dispersion": 2}
    item = {"dist": "lognormal", "median": 0.01, "sigma": 0.5}
    model = build(
        {"fan": {"kind": "fan_out", "count": k, "item": "s"}},
        subgraphs={"s": {"entry": "x", "nodes": {"x": {"kind": "tool", "cost": item}}}},
    )
    mom = exact_moments(model)
    ek, vk = 4.0, 4 + 16 / 2
    ex = 0.01 * math.exp(0.125)
    vx = ex**2 * (math.exp(0.25) - 1)
    assert mom.mean[0] == pytest.approx(ek * ex, rel=1e-9)
    assert mom.var[0] == pytest.approx(ek * vx + vk * ex**2, rel=1e-9)
    assert mom.mean[6] == pytest.approx(ek)


def test_tiered_call_matches_integration() -> None:
    """Input lognormal across the 200k tier: the whole call is priced at the tier it lands in."""
    mom = exact_moments(
        build(
            {
                "a": {
                    "kind": "model",
                    "model": "big",
                    "input_tokens": {"dist": "lognormal", "median": 120_000, "sigma": 0.6},
                    "output_tokens": 1000,
                }
            }
        )
    )

    def cost(z: float) -> float:
        x = 120_000 * math.exp(0.6 * z)
        return (x * 3 + 1000 * 15) / 1e6 if x <= 200_000 else (x * 6 + 1000 * 22.5) / 1e6

    cut = math.log(200_000 / 120_000) / 0.6
    phi = stats.norm.pdf

    def moment(k: int) -> float:
        return sum(
            integrate.quad(lambda z: cost(z) ** k * phi(z), lo, hi, epsabs=0, epsrel=1e-12)[0]
            for lo, hi in ((-12.0, cut), (cut, 12.0))
        )

    mean, second = moment(1), moment(2)
    assert mom.mean[0] == pytest.approx(mean, rel=1e-7)
    assert mom.var[0] == pytest.approx(second - mean**2, rel=1e-6)


def test_loop_with_linear_context_growth() -> None:
    """S geometric, step k sends c0 + (k-1)Δ tokens: E[C] = (c0·r + o·r_o)/(1-c) + Δ·r·c/(1-c)²."""
    c, c0, d, o = 0.8, 5000.0, 1500.0, 400.0
    mom = exact_moments(
        build(
            {
                "a": {
                    "kind": "agent_loop",
                    "model": "small",
                    "context": {"initial": c0, "growth_per_step": d},
                    "output_tokens": o,
                    "continue_p": c,
                }
            }
        )
    )
    r, ro = 0.25e-6, 2e-6
    assert mom.mean[0] == pytest.approx(
        (c0 * r + o * ro) / (1 - c) + d * r * c / (1 - c) ** 2, rel=1e-10
    )
    assert mom.mean[2] == pytest.approx(1 / (1 - c))
    assert mom.var[2] == pytest.approx(c / (1 - c) ** 2)


def test_loop_with_prompt_cache_and_clipped_context() -> None:
    c, c0, d, cmax, o = 0.85, 4000.0, 3000.0, 40_000.0, 300.0
    mom = exact_moments(
        build(
            {
                "a": {
                    "kind": "agent_loop",
                    "model": "big",
                    "context": {"initial": c0, "growth_per_step": d, "max": cmax},
                    "output_tokens": o,
                    "continue_p": c,
                    "prompt_cache": True,
                }
            }
        )
    )
    # brute force over the number of steps, written out independently of the engine
    read, write, out = 0.3e-6, 3.75e-6, 15e-6
    total, mean, second = 0.0, 0.0, 0.0
    for s in range(1, 400):
        step_cost = []
        for k in range(1, s + 1):
            raw = c0 + (k - 1) * d
            if raw > cmax:
                step_cost.append(cmax * write + o * out)  # window slides: no cache hits
            elif k == 1:
                step_cost.append(c0 * write + o * out)
            else:
                step_cost.append((c0 + (k - 2) * d) * read + d * write + o * out)
        p = (1 - c) * c ** (s - 1)
        x = sum(step_cost)
        total += p
        mean += p * x
        second += p * x * x
    assert total == pytest.approx(1.0, abs=1e-12)
    assert mom.mean[0] == pytest.approx(mean, rel=1e-9)
    assert mom.var[0] == pytest.approx(second - mean**2, rel=1e-8)


def test_step_counts_are_phase_type() -> None:
    """P(steps > H) = c^H for a plain loop."""
    c = 0.7
    model = build({"a": {"kind": "agent_loop", "cost_per_step": 0.01, "continue_p": c}})
    steps = distribution(model, "steps")
    for h in (1, 5, 17):
        assert steps.exceed(h) == pytest.approx(c**h, abs=1e-9)
    assert steps.cap_for(1e-3) == math.ceil(math.log(1e-3) / math.log(c))


def test_branch_mixture_variance() -> None:
    model = build(
        {
            "a": {
                "kind": "tool",
                "cost": 0.01,
                "next": [{"to": "b", "p": 0.3}, {"to": "done", "p": "rest"}],
            },
            "b": {"kind": "tool", "cost": 0.05},
        }
    )
    mom = exact_moments(model)
    assert mom.mean[0] == pytest.approx(0.01 + 0.3 * 0.05)
    assert mom.var[0] == pytest.approx(0.3 * 0.7 * 0.05**2)
