"""The three engines agree: exact moments, Monte Carlo and the transform (FFT) oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from execbudget.modeling import CompiledModel, distribution, exact_moments, simulate
from execbudget.modeling.common import DIMS
from execbudget.modeling.mcstats import z_for

from .conftest import build

CONF = 0.999


def mixed(envelope: bool) -> CompiledModel:
    """A call with tiers and retries, a branch into a cached agent loop or a fan-out of
    sub-agent loops, and a re-validation loop."""
    nodes: dict[str, Any] = {
        "a": {
            "kind": "model",
            "model": "big",
            "input_tokens": {"from": "q", "plus": 500}
            if envelope
            else {"dist": "lognormal", "median": 150_000, "sigma": 0.4},
            "output_tokens": {"dist": "lognormal", "median": 300, "p99": 2000},
            "retry": {
                "p_fail": 0.05,
                "max_retries": 3,
                "failed_cost": 0.5,
                "incident": {"share": 0.05, "p_fail": 0.4},
            },
            "next": [
                {
                    "to": "loop",
                    "p": {"by": "k", "edges": [3], "values": [0.6, 0.3]} if envelope else 0.4,
                },
                {"to": "fan", "p": "rest"},
            ],
        },
        "loop": {
            "kind": "agent_loop",
            "model": "big",
            "context": {"initial": 3000, "growth_per_step": 1500, "max": 30000},
            "output_tokens": {"dist": "lognormal", "median": 400, "p99": 2000},
            "continue_p": 0.8,
            "stuck": {"share": 0.1, "continue_p": 0.9},
            "max_steps": 60,
            "prompt_cache": True,
            "tool_calls_per_step": 1,
            "tool_cost": 0.001,
            "retry": {"p_fail": 0.03, "max_retries": 2},
            "next": "v",
        },
        "fan": {"kind": "fan_out", "count": {"from": "k"}, "item": "sub", "next": "v"},
        "v": {
            "kind": "tool",
            "cost": {"dist": "lognormal", "median": 0.002, "p99": 0.01},
            "next": [{"to": "v", "p": 0.2}, {"to": "done", "p": "rest"}],
        },
    }
    envelope_vars: dict[str, Any] = {
        "k": {"dist": "negbin", "mean": 3, "dispersion": 2, "offset": 1}
    }
    if envelope:
        envelope_vars["q"] = {"dist": "lognormal", "median": 50_000, "p99": 400_000}
    return build(
        nodes,
        envelope=envelope_vars,
        subgraphs={
            "sub": {
                "entry": "s",
                "nodes": {
                    "s": {
                        "kind": "agent_loop",
                        "model": "small",
                        # the transform takes a loop's random context through a few atoms only,
                        # so the tail oracle runs with a fixed growth
                        "context": {
                            "initial": 2000,
                            "growth_per_step": {"dist": "lognormal", "median": 800, "sigma": 0.8}
                            if envelope
                            else 900,
                        },
                        "output_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.6},
                        "continue_p": 0.7,
                        "tool_calls_per_step": 2,
                        "tool_cost": 0.0005,
                    }
                },
            }
        },
    )


@pytest.fixture(scope="module")
def with_envelope() -> tuple[CompiledModel, Any, Any]:
    model = mixed(envelope=True)
    return model, exact_moments(model), simulate(model, 300_000, seed=11)


def test_exact_moments_inside_the_monte_carlo_band(
    with_envelope: tuple[CompiledModel, Any, Any],
) -> None:
    model, mom, sim = with_envelope
    sim.confidence = CONF
    mean, sd = sim.mean(), sim.sd()
    assert mean.covers(float(mom.mean[0])), (mom.mean[0], mean)
    assert sd.covers(float(mom.sd[0])), (mom.sd[0], sd)
    z = z_for(CONF)
    for dim in ("steps", "calls", "retries", "tool_calls", "fan_out"):
        h = sim.counters[dim]
        k = np.arange(h.counts.shape[0])
        mu = h.mean()
        var = float(h.counts @ (k - mu) ** 2) / h.n
        i = DIMS.index(dim)
        assert abs(mom.mean[i] - mu) <= z * np.sqrt(var / h.n), dim
    nodes = sim.node_means()
    for name, value in mom.node_cost.items():
        est = nodes[name]
        half = (est.hi - est.lo) / 2 * z / z_for(0.99)
        assert abs(value - est.value) <= half, name
    for i, name in enumerate(model.graph.names):
        assert sim.visits[i] / sim.runs == pytest.approx(mom.visits[name], rel=0.01)


@pytest.fixture(scope="module")
def without_envelope() -> tuple[CompiledModel, Any, Any]:
    model = mixed(envelope=False)
    return model, distribution(model, "cost", m=1 << 15), simulate(model, 400_000, seed=4)


def test_transform_and_monte_carlo_tails_agree(
    without_envelope: tuple[CompiledModel, Any, Any],
) -> None:
    _, fft, sim = without_envelope
    sim.confidence = CONF
    assert fft.mass == pytest.approx(1.0, abs=1e-6)
    for q, est in sim.quantiles((0.5, 0.9, 0.99, 0.999)).items():
        # the lattice step is the only extra error of the oracle
        assert est.lo - fft.h <= fft.quantile(q) <= est.hi + fft.h, (q, fft.quantile(q), est)


def test_transform_reproduces_the_exact_moments(
    without_envelope: tuple[CompiledModel, Any, Any],
) -> None:
    model, fft, _ = without_envelope
    mom = exact_moments(model)
    assert fft.mean() == pytest.approx(float(mom.mean[0]), rel=1e-4)
    assert fft.sd() == pytest.approx(float(mom.sd[0]), rel=1e-3)


def test_exact_counter_distributions_match_the_simulation(
    without_envelope: tuple[CompiledModel, Any, Any],
) -> None:
    model, _, sim = without_envelope
    z = z_for(CONF)
    for dim in ("steps", "calls", "tool_calls", "fan_out"):
        exact = distribution(model, dim)
        assert exact.mean() == pytest.approx(
            float(exact_moments(model).mean[DIMS.index(dim)]), rel=1e-6
        )
        for q in (0.9, 0.99, 0.999):
            x = exact.quantile(q)
            p = exact.exceed(x)
            half = z * np.sqrt(p * (1 - p) / sim.runs) + 1 / sim.runs
            assert abs(sim.counters[dim].exceed(x) - p) <= half, (dim, x)


def test_seeds_are_reproducible_and_workers_do_not_matter() -> None:
    model = mixed(envelope=True)
    a = simulate(model, 6000, seed=5, chunk_size=2000)
    b = simulate(model, 6000, seed=5, chunk_size=2000)
    c = simulate(model, 6000, seed=6, chunk_size=2000)
    two = simulate(model, 6000, seed=5, chunk_size=2000, workers=2)
    assert np.array_equal(a.totals, b.totals)
    assert np.array_equal(a.totals, two.totals)
    assert not np.array_equal(a.totals, c.totals)
    assert a.counters["steps"].counts.tolist() == two.counters["steps"].counts.tolist()


def test_progress_and_chunks() -> None:
    model = mixed(envelope=False)
    seen: list[tuple[int, int]] = []
    sim = simulate(model, 5000, seed=1, chunk_size=2000, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2000, 5000), (4000, 5000), (5000, 5000)]
    assert sim.totals.shape == (5000,)
    with pytest.raises(ValueError):
        simulate(model, 0)
