"""``execbudget model``: the subcommand registered on a parser, its outputs and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from rich.console import Console

from execbudget.modeling import analyze, render, to_json
from execbudget.modeling.cli import register
from execbudget.policy import Policy

from .conftest import EXAMPLES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="execbudget")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    code = args.func(args)
    assert isinstance(code, int)
    return code


def test_json_policy_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, png, svg = tmp_path / "p.yaml", tmp_path / "f.png", tmp_path / "f.svg"
    graph = str(EXAMPLES / "seed.yaml")
    code = run(
        [
            "model",
            graph,
            "--runs",
            "5000",
            "--seed",
            "3",
            "--json",
            "--emit-policy",
            str(policy),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["workflow"] == "seed" and data["currency"] == "USD" and data["runs"] == 5000
    assert {"mean", "sd", "quantiles", "max"} <= set(data["simulation"])
    assert set(data["simulation"]["quantiles"]) == {"p50", "p90", "p95", "p99", "p99.9"}
    assert all(c["agrees"] for c in data["checks"])
    assert Policy.load(policy).limits_for("run:seed").lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(["model", graph, "--runs", "3000", "--plot", str(svg)]) == 0
    assert "<svg" in svg.read_text()
    out = capsys.readouterr().out
    assert "Run cost" in out and "Derived caps" in out and "figure written" in out


def test_errors_exit_with_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nentry: a\nnodes:\n  a: {kind: tool, next: nowhere}\n")
    assert run(["model", str(bad), "--runs", "100"]) == 2
    assert "node 'a': next goes to 'nowhere'" in capsys.readouterr().err
    assert (
        run(
            [
                "model",
                str(EXAMPLES / "seed.yaml"),
                "--runs",
                "100",
                "--plot",
                str(tmp_path / "x.pdf"),
            ]
        )
        == 2
    )
    assert run(["model", str(tmp_path / "missing.yaml")]) == 2
    assert run(["model", str(EXAMPLES / "seed.yaml"), "--runs", "0"]) == 2


def test_render_and_json_cover_every_section() -> None:
    a = analyze(EXAMPLES / "research.yaml", runs=3000, seed=1)
    console = Console(record=True, width=140)
    render(a, console)
    text = console.export_text()
    for part in (
        "Run cost",
        "Cost per node",
        "research/search",
        "Derived caps",
        "Enforcement",
        "Sensitivity",
        "concurrency",
    ):
        assert part in text
    data = to_json(a)
    json.dumps(data)  # plain data only
    assert data["concurrency"] == a.caps.concurrency and data["depth"] == 2
    assert data["amplification"]["mean"] > 1
    assert data["nodes"][0]["node"] == "plan"
