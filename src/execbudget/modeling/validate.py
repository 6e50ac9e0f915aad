"""
Structural checks of a graph spec, with messages that name the node and what to change.

Pydantic checks each field; this module checks what only the whole graph can tell:
targets that do not exist, unreachable nodes, branch probabilities that do not sum to one
(in every bin of the envelope variable they depend on), loops with no way out, envelope
variables and subgraphs that are not declared, fan-out counts that are not whole numbers,
and sub-agents that spawn themselves. Every problem is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError
from ._arrays import FloatArray
from ._deps import nx
from .distributions import AnyDist
from .spec import (
    TERMINALS,
    AnyNode,
    BinnedP,
    EnvRef,
    FanOutNode,
    GraphSpec,
    LoopNode,
    ModelNode,
    Next,
)

_TOL = 1e-9


class GraphError(ConfigurationError):
    """An invalid graph: every problem, each naming the node and what to change."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid graph {source}:\n{lines}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.source, self.problems))


@dataclass(frozen=True, slots=True)
class BranchTable:
    """Where a node goes after a successful visit: ``probs[bin, target]``."""

    targets: tuple[str, ...]
    probs: FloatArray
    by: str | None = None
    edges: tuple[float, ...] = ()


def branch_table(where: str, nxt: Next, problems: list[str]) -> BranchTable:
    """Resolve ``next`` into a table of target probabilities per envelope bin."""
    if nxt is None:
        return BranchTable(("done",), np.ones((1, 1)))
    if isinstance(nxt, str):
        return BranchTable((nxt,), np.ones((1, 1)))
    if not nxt:
        problems.append(f"{where}: next is an empty list; give at least one branch or omit it")
        return BranchTable(("done",), np.ones((1, 1)))
    targets = tuple(b.to for b in nxt)
    seen = {t for t in targets if targets.count(t) > 1}
    if seen:
        problems.append(f"{where}: branch target(s) {sorted(seen)} listed twice; merge them")
    binned = [b.p for b in nxt if isinstance(b.p, BinnedP)]
    by = binned[0].by if binned else None
    edges = binned[0].edges if binned else ()
    for p in binned[1:]:
        if p.by != by or p.edges != edges:
            problems.append(
                f"{where}: binned branch probabilities must all use the same variable and "
                f"edges (found {by} {list(edges)} and {p.by} {list(p.edges)})"
            )
            return BranchTable(targets, np.full((1, len(targets)), 1.0 / len(targets)))
    n_bins = len(edges) + 1
    probs = np.zeros((n_bins, len(targets)))
    rest = [i for i, b in enumerate(nxt) if b.p == "rest"]
    if len(rest) > 1:
        problems.append(f"{where}: only one branch may have p: rest")
        return BranchTable(targets, np.full((1, len(targets)), 1.0 / len(targets)))
    for i, b in enumerate(nxt):
        if isinstance(b.p, BinnedP):
            if len(b.p.values) != n_bins:
                problems.append(
                    f"{where}: branch to {b.to!r} has {len(b.p.values)} values for "
                    f"{n_bins} bins ({len(edges)} edges give {n_bins} bins)"
                )
                return BranchTable(targets, np.full((1, len(targets)), 1.0 / len(targets)))
            probs[:, i] = b.p.values
        elif isinstance(b.p, float | int):
            probs[:, i] = float(b.p)
    if np.any(probs < 0) or np.any(probs > 1):
        problems.append(f"{where}: branch probabilities must be between 0 and 1")
    total = probs.sum(axis=1)
    if rest:
        left = 1.0 - total
        if np.any(left < -_TOL):
            problems.append(
                f"{where}: the other branches already sum to {total.max():.6g}, leaving "
                "nothing for p: rest; lower them"
            )
        probs[:, rest[0]] = np.clip(left, 0.0, 1.0)
    elif np.any(np.abs(total - 1.0) > _TOL):
        bad = ", ".join(f"{t:.6g}" for t in total)
        problems.append(
            f"{where}: branch probabilities sum to {bad}, not 1; fix them or give one "
            "branch p: rest"
        )
    return BranchTable(targets, probs, by, edges)


def _exhaust_target(node: AnyNode) -> str | None:
    """Where a visit goes when its retries (or a loop's max_steps) run out, if anywhere."""
    if isinstance(node, LoopNode) and node.max_steps is not None and node.on_max == "fail":
        return "fail"
    retry = getattr(node, "retry", None)
    if retry is not None and retry.on_exhaust == "fail":
        return "fail"
    return None


def _quantities(node: AnyNode) -> list[tuple[str, AnyDist | EnvRef | None]]:
    if isinstance(node, ModelNode):
        return [("input_tokens", node.input_tokens), ("output_tokens", node.output_tokens)]
    if isinstance(node, LoopNode):
        ctx = node.context
        return [
            ("context.initial", ctx.initial if ctx else None),
            ("context.growth_per_step", ctx.growth_per_step if ctx else None),
            ("output_tokens", node.output_tokens),
        ]
    if isinstance(node, FanOutNode):
        return [("count", node.count)]
    return []


def _check_node(
    where: str,
    node: AnyNode,
    envelope: Mapping[str, AnyDist],
    subgraphs: set[str],
    problems: list[str],
) -> None:
    for field, q in _quantities(node):
        if isinstance(q, EnvRef) and q.from_ not in envelope:
            declared = ", ".join(sorted(envelope)) or "none"
            problems.append(
                f"{where}: {field} refers to envelope variable {q.from_!r}, which is not "
                f"declared (declared: {declared}); add it under envelope:"
            )
    if isinstance(node, ModelNode):
        if node.cost is None and (node.input_tokens is None or node.output_tokens is None):
            problems.append(
                f"{where}: a model node needs a cost per call (cost:) or both input_tokens "
                "and output_tokens"
            )
        if node.cost is None and node.model is None and node.price is None:
            problems.append(f"{where}: give model: (priced from the price book) or price:")
        if node.cache_read_share and node.input_tokens is None:
            problems.append(f"{where}: cache_read_share needs input_tokens")
    if isinstance(node, LoopNode):
        if node.cost_per_step is None and (node.context is None or node.output_tokens is None):
            problems.append(
                f"{where}: an agent_loop needs cost_per_step or both context and output_tokens"
            )
        if node.cost_per_step is None and node.model is None and node.price is None:
            problems.append(f"{where}: give model: (priced from the price book) or price:")
        if node.prompt_cache and node.context is None:
            problems.append(f"{where}: prompt_cache needs a context")
    if isinstance(node, FanOutNode):
        if node.item not in subgraphs:
            declared = ", ".join(sorted(subgraphs)) or "none"
            problems.append(
                f"{where}: item subgraph {node.item!r} is not declared under subgraphs: "
                f"(declared: {declared})"
            )
        count = node.count
        if isinstance(count, EnvRef):
            var = envelope.get(count.from_)
            whole = (
                var is not None
                and var.integer
                and float(count.times).is_integer()
                and count.plus.integer
            )
        else:
            whole = count.integer
        if not whole:
            problems.append(
                f"{where}: count must be a whole number (fixed int, negbin, poisson, an "
                "empirical trace of integers, or an envelope variable of those)"
            )


def _check_graph(
    label: str,
    entry: str,
    nodes: Mapping[str, AnyNode],
    envelope: Mapping[str, AnyDist],
    subgraphs: set[str],
    problems: list[str],
) -> None:
    def where(name: str) -> str:
        return f"{label}node {name!r}"

    if entry not in nodes:
        problems.append(f"{label}entry {entry!r} is not a node (nodes: {', '.join(nodes)})")
        return
    g = nx.DiGraph()
    g.add_nodes_from(TERMINALS)
    for name, node in nodes.items():
        g.add_node(name)
        if name in TERMINALS:
            problems.append(f"{where(name)}: {name!r} is reserved for the end of a run; rename it")
        _check_node(where(name), node, envelope, subgraphs, problems)
        table = branch_table(where(name), node.next, problems)
        if table.by is not None and table.by not in envelope:
            problems.append(
                f"{where(name)}: branches depend on envelope variable {table.by!r}, which "
                "is not declared; add it under envelope:"
            )
        for i, target in enumerate(table.targets):
            if target not in nodes and target not in TERMINALS:
                problems.append(
                    f"{where(name)}: next goes to {target!r}, which is not a node, done or fail"
                )
                continue
            if np.any(table.probs[:, i] > 0):
                g.add_edge(name, target)
        exhaust = _exhaust_target(node)
        if exhaust is not None:
            g.add_edge(name, exhaust)
    reachable = nx.descendants(g, entry) | {entry}
    unreachable = [n for n in nodes if n not in reachable]
    if unreachable:
        problems.append(
            f"{label}node(s) {', '.join(repr(n) for n in unreachable)} cannot be reached from "
            f"the entry {entry!r}; connect them or remove them"
        )
    exits: set[str] = set()
    for t in TERMINALS:
        exits |= nx.ancestors(g, t)
    trapped = [n for n in nodes if n in reachable and n not in exits]
    if trapped:
        sub = g.subgraph(trapped)
        for comp in nx.strongly_connected_components(sub):
            names = ", ".join(repr(n) for n in sorted(comp))
            problems.append(
                f"{label}node(s) {names} form a loop with no exit (no path to done or fail "
                "with a probability above 0); give one of them a branch out of the loop"
            )


def check_graph(spec: GraphSpec, source: str | None = None) -> None:
    """Raise :class:`GraphError` listing every structural problem of ``spec``."""
    problems: list[str] = []
    subs = set(spec.subgraphs)
    _check_graph("", spec.entry, spec.nodes, spec.envelope, subs, problems)
    for sname, sub in spec.subgraphs.items():
        _check_graph(f"subgraph {sname!r}, ", sub.entry, sub.nodes, spec.envelope, subs, problems)
    refs = nx.DiGraph()
    refs.add_node("<main>")
    for owner, nodes in [
        ("<main>", spec.nodes),
        *((k, v.nodes) for k, v in spec.subgraphs.items()),
    ]:
        for node in nodes.values():
            if isinstance(node, FanOutNode):
                refs.add_edge(owner, node.item)
    for cycle in nx.simple_cycles(refs):
        problems.append(
            f"subgraph(s) {' → '.join(cycle)} spawn themselves (a fan-out cycle has no bound); "
            "break the cycle"
        )
    used = nx.descendants(refs, "<main>")
    for sname in spec.subgraphs:
        if sname not in used:
            problems.append(f"subgraph {sname!r} is never used by a fan_out node; remove it")
    for name, dist in spec.envelope.items():
        if getattr(dist, "values", 1) is None:
            problems.append(f"envelope variable {name!r}: its trace was not loaded")
    if problems:
        raise GraphError(source or repr(spec.name), problems)


__all__ = ["BranchTable", "GraphError", "branch_table", "check_graph"]
