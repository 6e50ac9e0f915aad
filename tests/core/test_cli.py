from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from execbudget import Enforcer, ManualClock
from execbudget.cli import main
from execbudget.demo import main as demo_main
from execbudget.simulate import PATTERNS

POLICY = """
scopes:
  - match: "org:acme"
    limits: {cost: {day: "10 USD"}, steps: 100}
  - match: "run:*"
    limits: {steps: 5, time: 30s}
    per_call: {max_output_tokens: 2k}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(POLICY)
    return path


def test_policy_check_prints_the_resolved_budgets(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "check", str(policy_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["settings"]["failure_mode"] == "closed"
    rows = {(b["match"], b["dimension"], b["window"]): b["limit"] for b in report["budgets"]}
    assert rows[("org:acme", "cost", "day")] == "10 USD"
    assert rows[("run:*", "per_call.max_output_tokens", "-")] == "2,000"
    assert main(["policy", "check", str(policy_file)]) == 0
    assert "valid policy" in capsys.readouterr().out


def test_invalid_policy_exits_2_with_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scopes: [{match: 'org:a', limits: {cost: 'ten dollars'}}]")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "scopes[0].limits.cost" in err


def test_status_events_reap_verify(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    clock = ManualClock()
    enforcer = Enforcer(policy_file, url, clock=clock)
    with enforcer.scope("org", "acme"), enforcer.run("triage") as run:
        run.step()
        run.hold({"cost": "2.50"}, ttl_s=10)  # never settled: the reaper's job
    enforcer.close()

    assert main(["status", "--ledger", url, "--json"]) == 0
    lines = {
        (d["scope"].split("#")[0], d["dimension"]): d for d in json.loads(capsys.readouterr().out)
    }
    assert lines[("org:acme", "cost")]["held"] == "2.5 USD"
    assert lines[("run:triage", "steps")]["spent"] == "1"

    assert main(["ledger", "events", "--ledger", url]) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["reserve", "commit", "reserve"]

    assert main(["ledger", "reap", "--ledger", url, "--json"]) == 0
    # The hold was made on a ManualClock in January 2026: by the real clock it is long expired.
    assert json.loads(capsys.readouterr().out) == {"reaped": 1}
    assert main(["status", "--ledger", url, "--json", "--scope", "org:"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["held"] == "0 USD"
    assert main(["ledger", "verify", "--ledger", url]) == 0
    assert "agree" in capsys.readouterr().out


def test_bad_ledger_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--ledger", "ftp://nowhere"]) == 2
    assert "unknown ledger URL" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["status", "--ledger", f"sqlite:///{blocker}/l.db"]) == 3
    assert "unavailable" in capsys.readouterr().err


def test_demo_contains_every_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "spend.png"
    argv = ["--ledger", f"sqlite:///{tmp_path}/demo.db", "--chart", str(chart), "--json"]
    assert demo_main([*argv, "--small"]) == 0
    report = json.loads(capsys.readouterr().out)
    scenarios = report["scenarios"]
    assert [s["pattern"] for s in scenarios] == list(PATTERNS)
    # every scenario contained by execbudget with zero overshoot ...
    assert report["contained"] and all(s["contained"] for s in scenarios)
    assert all(Decimal(s["with"]["overshoot"]) == 0 for s in scenarios)
    # ... and every run without (full) budgets really did overshoot
    assert all(Decimal(s["without"]["overshoot"]) > 0 for s in scenarios)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
