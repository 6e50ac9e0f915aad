from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from execbudget.audit import audit
from execbudget.cli import main
from execbudget.policy import Policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def test_complete_policy_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(EXAMPLES / "complete.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and not [f for f in report["findings"] if f["severity"] == "gap"]
    matrix = report["coverage"][0]["matrix"]
    assert matrix["step"]["agent loop"] and matrix["fan-out"]["orchestration"]
    assert matrix["cost"]["platform"] and matrix["output"]["invocation"]


def test_platform_only_policy_is_partial_enforcement(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(EXAMPLES / "platform-only.yaml")]) == 1
    out = capsys.readouterr().out
    assert "partial enforcement: platform spend caps but no step cap" in out
    for missing in (
        "no step cap",
        "no retry cap",
        "no fan-out cap",
        "no time limit",
        "no per-call output cap",
    ):
        assert missing in out


def _gaps(data: dict[str, Any]) -> list[str]:
    report = audit(Policy.from_dict(data))
    return [f.message for f in report.findings if f.severity == "gap"]


def test_step_cap_without_fan_out_cap_is_partial() -> None:
    gaps = _gaps({"scopes": [{"match": "run:x", "limits": {"steps": 5}}]})
    assert any("a step cap but no fan-out cap" in g for g in gaps)
    assert any("no org/team/key scope" in g for g in gaps)


def test_child_above_parent_is_inconsistent() -> None:
    gaps = _gaps(
        {
            "scopes": [
                {"match": "org:acme", "limits": {"cost": {"day": "10 USD"}}},
                {"match": "team:acme/*", "limits": {"cost": {"day": "25 USD"}}},
            ]
        }
    )
    assert any("above its parent org:acme" in g for g in gaps)


def test_floor_that_never_fits_and_caps_above_the_run() -> None:
    gaps = _gaps(
        {
            "scopes": [
                {
                    "match": "run:x",
                    "limits": {"output_tokens": 100, "cost": "0.05 USD"},
                    "per_call": {"min_output_tokens": 256, "max_cost": "0.10 USD"},
                }
            ]
        }
    )
    assert any("can never fit in the run's output_tokens limit 100" in g for g in gaps)
    assert any("per_call.max_cost is above the run's cost limit" in g for g in gaps)


def test_windows_that_outlive_what_they_guard() -> None:
    gaps = _gaps(
        {
            "hold_ttl": "2h",
            "scopes": [
                {"match": "org:acme", "limits": {"cost": {"hour": "1 USD"}}},
                {"match": "run:x", "limits": {"steps": {"day": 10}}},
            ],
        }
    )
    assert any("hold_ttl 7200s is longer than the shortest window (3600s)" in g for g in gaps)
    assert any("calendar windows on a per-run scope" in g for g in gaps)
