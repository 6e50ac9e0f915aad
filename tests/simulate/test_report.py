"""
The simulator's outputs (table, JSON, chart, command line) and its small pure parts: the
safety cap, the layer a denial is reported at, pattern names, and the scenario policies
as ``execbudget audit`` sees them.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from execbudget import ConfigurationError, Policy
from execbudget.audit import audit
from execbudget.cli import main
from execbudget.errors import CostBudgetExceeded, FanOutExceeded, OutputBudgetExceeded
from execbudget.simulate import PATTERNS, coupling, fanout, partial, retry_storm, runaway
from execbudget.simulate._harness import (
    SafetyCap,
    SafetyCapReached,
    percentile,
    stop_from_denial,
)
from execbudget.simulate.chart import write_chart
from execbudget.simulate.model import ScenarioResult, Stop, Variant, fmt
from execbudget.simulate.report import render
from execbudget.simulate.runner import Simulation, resolve

pytestmark = pytest.mark.xdist_group("simulate")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- chart and table ----------------------------------------------------------------------
def test_the_chart_is_written_as_a_png(simulation: Simulation, chart_path: Path) -> None:
    written = write_chart(simulation.results, chart_path)

    assert written == chart_path
    data = chart_path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 600  # a 3 × 2 grid of panels


def test_the_table_names_every_pattern_and_the_verdict(simulation: Simulation) -> None:
    out = io.StringIO()
    render(simulation, Console(file=out, width=200, color_system=None))
    text = out.getvalue()

    for result in simulation.results:
        assert result.title in text
        assert result.budgeted.stop.what.split(" on ")[0] in text
    assert "all 5 patterns contained with zero overshoot" in text
    assert "safety cap" in text


# -- the command line -----------------------------------------------------------------------
def test_simulate_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "retry.png"
    argv = ["simulate", "retry", "--json", "--small", "--ledger", f"sqlite:///{tmp_path}/l.db"]
    assert main([*argv, "--chart", str(chart)]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)

    assert report.keys() == {"contained", "ledger", "elapsed_s", "small", "chart", "scenarios"}
    assert report["contained"] is True and report["small"] is True
    assert report["chart"] == str(chart) and chart.read_bytes()[:8] == PNG_SIGNATURE
    (scenario,) = report["scenarios"]
    assert scenario.keys() == {
        "pattern", "title", "unit", "budget", "budget_label", "contained", "failure_shown",
        "without", "with", "notes",
    }  # fmt: skip
    assert scenario["pattern"] == "retry-storm" and scenario["unit"] == "requests"
    for mode, variant in (("no budgets", scenario["without"]), ("execbudget", scenario["with"])):
        assert variant.keys() == {
            "mode", "spend", "spend_display", "overshoot", "requests", "answered",
            "elapsed_s", "stopped_by", "safety_cap", "books", "ledger_problems", "notes",
            "metrics", "timeline",
        }  # fmt: skip
        assert variant["mode"] == mode
        assert variant["stopped_by"].keys() == {"layer", "layer_name", "budget", "text"}
        assert all(len(point) == 2 for point in variant["timeline"])
    assert Decimal(scenario["with"]["overshoot"]) == 0
    assert scenario["with"]["stopped_by"]["layer_name"] == "agent loop"
    assert Decimal(scenario["without"]["overshoot"]) > 0


def test_an_unknown_pattern_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "meltdown", "--small"]) == 2
    assert "unknown failure pattern 'meltdown'" in capsys.readouterr().err


def test_resolve_accepts_all_names_and_unique_parts() -> None:
    assert resolve(None) == resolve("all") == PATTERNS
    assert resolve("fan-out") == ("silent-fan-out",)
    assert resolve("partial-enforcement") == ("partial-enforcement",)
    with pytest.raises(ConfigurationError, match="unknown failure pattern"):
        resolve("r")  # runaway-recursion, partial-enforcement, retry-storm, ...


# -- verdicts --------------------------------------------------------------------------------
def _variant(spend: str, *, capped: bool = False, problems: list[str] | None = None) -> Variant:
    return Variant(
        "execbudget", Decimal(spend), 1, 1, 0.1, Stop(2, "steps 3 on run:x"), capped=capped,
        problems=problems or [],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ours", "contained"),
    [
        (_variant("0.10"), True),
        (_variant("0.1000000001"), False),  # a nano-dollar over is an overshoot
        (_variant("0.05", capped=True), False),  # the safety cap stopped it, not a budget
        (_variant("0.05", problems=["run:x cost (total): 1 still held"]), False),
    ],
)
def test_contained_means_zero_overshoot_clean_books_and_no_safety_cap(
    ours: Variant, contained: bool
) -> None:
    result = ScenarioResult("p", "P", "USD", Decimal("0.10"), "$0.10", _variant("1"), ours)

    assert result.contained is contained


def test_safety_cap_stops_at_the_limit_and_stays_stopped() -> None:
    cap = SafetyCap(max_requests=2)
    cap.check()
    cap.check()
    with pytest.raises(SafetyCapReached):
        cap.check()
    with pytest.raises(SafetyCapReached):
        cap.check()
    assert cap.tripped and cap.sent == 2
    # a BaseException: `except Exception` in an SDK or a framework cannot swallow it
    assert not issubclass(SafetyCapReached, Exception)


def test_safety_cap_on_time() -> None:
    cap = SafetyCap(max_requests=100, max_seconds=0.0)
    with pytest.raises(SafetyCapReached):
        cap.check()


@pytest.mark.parametrize(
    ("denial", "layer", "what"),
    [
        (
            CostBudgetExceeded(
                scope="org:acme#s1", dimension="cost", limit="5 USD", spent="5 USD",
                held="0 USD", requested="0.01 USD", window="d2026-12-04",
            ),
            4,
            "cost 5 USD/day on org:acme",
        ),
        (
            FanOutExceeded(
                scope="run:digest#s1", dimension="fan_out", limit=50, spent=0, held=0,
                requested=10_000,
            ),
            3,
            "fan_out 50 on run:digest",
        ),
        (
            OutputBudgetExceeded(
                scope="run:a#1", dimension="output_tokens", limit=256, spent=0, held=0,
                requested=4000, reason="cap",
            ),
            1,
            "output_tokens 256 on run:a",
        ),
    ],
)  # fmt: skip
def test_a_denial_is_reported_at_its_layer(denial: Any, layer: int, what: str) -> None:
    stop = stop_from_denial(denial)

    assert (stop.layer, stop.what) == (layer, what)
    assert stop.text.startswith(f"layer {layer} (")


def test_percentile_and_money_format() -> None:
    assert percentile([], 0.95) == 0.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert fmt(Decimal("0.04242"), "USD") == "$0.0424"
    assert fmt(Decimal("34.6812"), "USD") == "$34.68"
    assert fmt(Decimal(1440), "requests") == "1,440 requests"


# -- the policies ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy",
    [
        runaway.policy(runaway.DEMO),
        fanout.policy(fanout.DEMO),
        coupling.policy(coupling.DEMO),
        partial.full_stack(partial.DEMO),
        retry_storm.policy(retry_storm.DEMO),
    ],
    ids=list(PATTERNS),
)
def test_every_full_stack_policy_passes_the_audit(policy: dict[str, Any]) -> None:
    report = audit(Policy.from_dict(policy))

    assert report.ok, [f.message for f in report.findings if f.severity == "gap"]


def test_the_platform_only_policy_is_flagged_as_partial_enforcement() -> None:
    report = audit(Policy.from_dict(partial.platform_only(partial.DEMO)))

    assert not report.ok
    assert any("partial enforcement" in f.message for f in report.findings)
