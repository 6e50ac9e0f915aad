"""Every example graph validates, the engines agree on it, and its policy loads in the runtime."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from execbudget.modeling import (
    Analysis,
    analyze,
    compile_graph,
    exact_moments,
    load_graph,
    policy_text,
)
from execbudget.policy import Policy
from execbudget.units import Dimension
from execbudget.windows import Window

from .conftest import EXAMPLES

FILES = sorted(EXAMPLES.glob("*.yaml"))
RUNS = 30_000


def test_the_issue_examples_are_all_there() -> None:
    assert {f.stem for f in FILES} >= {
        "seed",
        "seed_clean_path",
        "seed_retry_path",
        "research",
        "coding",
    }


@pytest.fixture(scope="module", params=FILES, ids=lambda p: p.stem)
def analysis(request: pytest.FixtureRequest) -> Analysis:
    return analyze(request.param, runs=RUNS, seed=1)


def test_engines_agree(analysis: Analysis) -> None:
    bad = [c for c in analysis.checks if not c.agrees]
    assert not bad, bad
    assert analysis.exact.p_done + analysis.exact.p_fail == pytest.approx(1.0)


def test_policy_loads_and_matches_the_caps(analysis: Analysis, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(analysis))
    policy = Policy.load(path)
    run = policy.limits_for(f"run:{analysis.name}")
    caps = analysis.caps
    units = {"cost": lambda v: int(Decimal(str(v)) * 10**9), "time": lambda v: int(v * 1000)}
    for dim in Dimension:
        cap = caps.caps.get(dim.value)
        if dim in (Dimension.DEPTH, Dimension.CONCURRENCY):
            continue
        if dim is Dimension.TIME:
            assert run.time_ms == (None if cap is None else units["time"](cap.value))
            continue
        lines = run.lines.get(dim, {})
        if cap is None:
            assert not lines, dim
        else:
            want = units.get(dim.value, int)(cap.value)
            assert lines[Window.TOTAL] == want, dim
    assert run.depth == caps.depth
    conc = run.lines.get(Dimension.CONCURRENCY, {}).get(Window.TOTAL)
    assert conc == caps.concurrency
    pc = run.per_call
    assert pc.max_input_tokens == caps.value("per_call.max_input_tokens")
    assert pc.max_output_tokens == caps.value("per_call.max_output_tokens")
    max_cost = caps.value("per_call.max_cost")
    assert pc.max_cost == (None if max_cost is None else int(Decimal(str(max_cost)) * 10**9))
    day = policy.limits_for(f"workflow:{analysis.name}").lines.get(Dimension.COST, {})
    if caps.daily_cost is None:
        assert not day
    else:
        assert day[Window.DAY] == int(Decimal(str(caps.daily_cost)) * 10**9)
    text = path.read_text()
    assert (
        f"seed {analysis.sim.seed}" in text
        and f"runs: {RUNS}" in text
        and "truncation target" in text
    )


def test_seed_workflow_by_hand() -> None:
    mom = exact_moments(compile_graph(load_graph(EXAMPLES / "seed.yaml")))
    attempts = 1 + 0.05 + 0.05**2 + 0.05**3
    reach_formatter = 1 - 0.05**4  # four failed reasoning attempts fail the run
    want = (
        0.002
        + 0.004
        + 0.001
        + 0.15 * 0.004
        + 0.008 * attempts
        + (0.003 + 0.003 / 0.8) * reach_formatter
    )
    assert float(mom.mean[0]) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.022771, abs=1e-6)
    assert mom.p_fail == pytest.approx(0.05**4)


@pytest.mark.parametrize(
    ("name", "total"), [("seed_clean_path", 0.021), ("seed_retry_path", 0.042)]
)
def test_deterministic_paths_cost_their_items(name: str, total: float) -> None:
    a = analyze(EXAMPLES / f"{name}.yaml", runs=2000, seed=0)
    assert float(a.exact.mean[0]) == pytest.approx(total, abs=1e-15)
    assert float(a.exact.sd[0]) == 0.0
    assert a.sim.totals.min() == pytest.approx(total) and a.sim.max() == pytest.approx(total)


def test_research_and_coding_anchor_figures() -> None:
    """The envelopes follow the anchors they cite (costmodel.md §3)."""
    research = load_graph(EXAMPLES / "research.yaml")
    k = research.envelope["subagents"]
    assert k.mean() == pytest.approx(4.0)  # "3–5 sub-agents"
    assert 9 <= k.quantile(0.99) <= 12  # "complex = 10+ sub-agents"
    coding = load_graph(EXAMPLES / "coding.yaml")
    task = coding.envelope["task_tokens"]
    assert task.quantile(0.5) == pytest.approx(3000)  # "payloads median ~3k tokens, σ 0.8–1.2"
