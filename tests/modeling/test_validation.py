"""Spec validation: every problem is reported, and each message names the node to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execbudget.errors import ConfigurationError
from execbudget.modeling import (
    GraphError,
    compile_graph,
    exact_moments,
    graph_from_dict,
    load_graph,
)

from .conftest import PRICES


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(GraphError) as info:
        compile_graph(graph_from_dict(data), PRICES)
    assert isinstance(info.value, ConfigurationError)
    return str(info.value)


def graph(nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "t", "entry": next(iter(nodes)), "nodes": nodes, **extra}


def test_branch_probabilities_must_sum_to_one() -> None:
    msg = problems(
        graph({"a": {"kind": "tool", "next": [{"to": "done", "p": 0.5}, {"to": "fail", "p": 0.4}]}})
    )
    assert "node 'a'" in msg and "sum to 0.9, not 1" in msg and "p: rest" in msg


def test_rest_fills_the_remainder_and_cannot_go_negative() -> None:
    ok = graph_from_dict(
        graph(
            {"a": {"kind": "tool", "next": [{"to": "done", "p": 0.3}, {"to": "fail", "p": "rest"}]}}
        )
    )
    assert ok.nodes["a"].next is not None
    msg = problems(
        graph(
            {"a": {"kind": "tool", "next": [{"to": "done", "p": 1.2}, {"to": "fail", "p": "rest"}]}}
        )
    )
    assert "node 'a'" in msg


def test_unreachable_nodes_are_named() -> None:
    msg = problems(graph({"a": {"kind": "tool"}, "orphan": {"kind": "tool"}}))
    assert "'orphan' cannot be reached from the entry 'a'" in msg


def test_loops_without_exit_are_named() -> None:
    msg = problems(
        graph(
            {
                "a": {"kind": "tool", "next": "b"},
                "b": {"kind": "tool", "next": "c"},
                "c": {"kind": "tool", "next": [{"to": "b", "p": 1.0}, {"to": "done", "p": 0.0}]},
            }
        )
    )
    assert "'b', 'c' form a loop with no exit" in msg


def test_unknown_targets_models_and_variables() -> None:
    msg = problems(
        graph(
            {
                "a": {
                    "kind": "model",
                    "model": "gpt-nope",
                    "input_tokens": {"from": "q"},
                    "output_tokens": 10,
                    "next": "b",
                },
                "b": {"kind": "tool", "next": "nowhere"},
            }
        )
    )
    assert "node 'a': input_tokens refers to envelope variable 'q'" in msg
    assert "node 'b': next goes to 'nowhere'" in msg
    msg = problems(
        graph(
            {"a": {"kind": "model", "model": "gpt-nope", "input_tokens": 10, "output_tokens": 10}}
        )
    )
    assert "node a: model 'gpt-nope' has no usable price" in msg


def test_field_errors_name_the_node_and_field() -> None:
    with pytest.raises(GraphError) as info:
        graph_from_dict(
            graph({"a": {"kind": "model", "cost": 0.1, "retry": {"p_fail": 1.5, "max_retries": 2}}})
        )
    assert "node 'a': retry.p_fail: Input should be less than 1" in str(info.value)
    with pytest.raises(GraphError, match="node 'a': costs: unknown key"):
        graph_from_dict(graph({"a": {"kind": "tool", "costs": 1}}))


def test_fan_out_counts_and_subgraphs() -> None:
    msg = problems(
        graph(
            {
                "a": {
                    "kind": "fan_out",
                    "count": {"dist": "lognormal", "median": 3, "p99": 9},
                    "item": "sub",
                }
            },
            subgraphs={
                "sub": {
                    "entry": "x",
                    "nodes": {"x": {"kind": "fan_out", "count": 2, "item": "sub"}},
                }
            },
        )
    )
    assert "node 'a': count must be a whole number" in msg
    assert "spawn themselves" in msg


def test_subgraph_problems_name_the_subgraph() -> None:
    msg = problems(
        graph(
            {"a": {"kind": "fan_out", "count": 2, "item": "sub"}},
            subgraphs={
                "sub": {
                    "entry": "x",
                    "nodes": {"x": {"kind": "tool", "next": [{"to": "done", "p": 0.2}]}},
                }
            },
        )
    )
    assert "subgraph 'sub', node 'x': branch probabilities sum to 0.2" in msg


def test_traces_load_from_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("tokens,other\n100,1\n200,2\n300,3\n")
    (tmp_path / "t.jsonl").write_text('{"n": 2}\n{"n": 3}\n\n{"n": 4}\n')
    (tmp_path / "g.yaml").write_text(
        "name: t\nentry: a\n"
        "envelope:\n"
        "  q: {dist: empirical, file: t.csv, column: tokens}\n"
        "  k: {dist: empirical, file: t.jsonl}\n"
        "nodes:\n"
        "  a: {kind: model, model: small, input_tokens: {from: q}, output_tokens: 10, next: b}\n"
        "  b: {kind: fan_out, count: {from: k}, item: s}\n"
        "subgraphs:\n  s: {entry: x, nodes: {x: {kind: tool, cost: 0.01}}}\n"
    )
    spec = load_graph(tmp_path / "g.yaml")
    assert spec.envelope["q"].values == (100.0, 200.0, 300.0)  # type: ignore[union-attr]
    mom = exact_moments(compile_graph(spec, PRICES))
    assert mom.mean[0] == pytest.approx(200 * 0.25e-6 + 10 * 2e-6 + 3 * 0.01)
    (tmp_path / "bad.yaml").write_text(
        "name: t\nentry: a\nenvelope:\n  q: {dist: empirical, file: missing.csv}\n"
        "nodes:\n  a: {kind: tool}\n"
    )
    with pytest.raises(GraphError, match=r"envelope variable 'q': trace 'missing\.csv'"):
        load_graph(tmp_path / "bad.yaml")


# -- properties -----------------------------------------------------------------------
@st.composite
def random_graph(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid graph: forward branches, some back edges, always a way out."""
    n = draw(st.integers(2, 6))
    names = [f"n{i}" for i in range(n)]
    nodes: dict[str, Any] = {}
    for i, name in enumerate(names):
        kind = draw(st.sampled_from(["model", "tool"]))
        node: dict[str, Any] = {"kind": kind, "cost": draw(st.sampled_from([0.001, 0.002, 0.005]))}
        if draw(st.booleans()):
            node["retry"] = {
                "p_fail": draw(st.sampled_from([0.0, 0.1, 0.3])),
                "max_retries": draw(st.integers(0, 3)),
            }
        targets = ([names[i + 1]] if i + 1 < n else ["done"]) + draw(
            st.lists(st.sampled_from([*names[: i + 1], "done", "fail"]), max_size=2, unique=True)
        )
        targets = list(dict.fromkeys(targets))
        weights = [draw(st.integers(1, 9)) for _ in targets]
        total = sum(weights)
        branches = [
            {"to": t, "p": w / total} for t, w in zip(targets[:-1], weights[:-1], strict=True)
        ]
        branches.append({"to": targets[-1], "p": "rest"})
        node["next"] = branches
        nodes[name] = node
    return graph(nodes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph())
def test_valid_graphs_compile_and_conserve_probability(data: dict[str, Any]) -> None:
    mom = exact_moments(compile_graph(graph_from_dict(data), PRICES))
    assert mom.p_done + mom.p_fail == pytest.approx(1.0)
    assert sum(mom.node_cost.values()) == pytest.approx(float(mom.mean[0]))
    assert float(mom.var[0]) >= 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(), st.data())
def test_broken_probabilities_are_reported_at_their_node(
    data: dict[str, Any], pick: st.DataObject
) -> None:
    name = pick.draw(st.sampled_from(sorted(data["nodes"])))
    branches = data["nodes"][name]["next"]
    branches[-1]["p"] = pick.draw(st.sampled_from([0.0, 0.5, 2.0])) if len(branches) > 1 else 0.5
    total = sum(b["p"] for b in branches)
    if abs(total - 1.0) < 1e-9:
        return
    with pytest.raises(GraphError) as info:
        graph_from_dict(data)
    assert f"node {name!r}" in str(info.value)


def test_toml_graphs_load_like_yaml(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(
        'name = "t"\nentry = "a"\n'
        '[nodes.a]\nkind = "model"\ncost = 0.01\n'
        'next = [{to = "b", p = 0.25}, {to = "done", p = "rest"}]\n'
        '[nodes.b]\nkind = "tool"\ncost = {dist = "lognormal", median = 0.002, sigma = 0.5}\n'
    )
    mom = exact_moments(compile_graph(load_graph(tmp_path / "g.toml"), PRICES))
    assert float(mom.mean[0]) == pytest.approx(0.01 + 0.25 * 0.002 * np.exp(0.125))
