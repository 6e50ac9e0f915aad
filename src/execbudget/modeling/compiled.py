"""
Compiling a graph spec into what the engines run: kernels, transition tables, an order.

``compile_graph`` checks the spec, prices every model node (node ``price:``, then the
graph's ``prices:``, then the price book), turns sizes into :class:`CQty`, retries into
:class:`CRetry`, and lays out each graph: node indices, branch targets and probabilities
per envelope bin, the strongly connected components in topological order (the Monte Carlo
walker processes a DAG node once and iterates only inside loops), and the cost columns
(one per node, plus one per node of every fan-out subgraph, for per-node attribution).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import ExecBudgetError
from ._arrays import FloatArray, IntArray
from ._deps import nx
from .common import NO_RETRY, ZERO, CQty, CRetry
from .distributions import AnyDist
from .kernel_call import CallKernel
from .kernel_fanout import FanOutKernel
from .kernel_loop import LoopKernel
from .rates import BookPricer, Pricer, RateCard, card_from_spec
from .spec import (
    AnyNode,
    EnvRef,
    FanOutNode,
    GraphSpec,
    LoopNode,
    ModelNode,
    PriceSpec,
    Retry,
    ToolNode,
)
from .validate import GraphError, branch_table, check_graph

DONE, FAIL = -1, -2

Kernel = CallKernel | LoopKernel | FanOutKernel


@dataclass(frozen=True)
class CompiledGraph:
    """One graph (the workflow, or a fan-out item) ready for the engines."""

    label: str
    names: tuple[str, ...]
    kernels: tuple[Kernel, ...]
    entry: int
    targets: tuple[IntArray, ...]
    probs: tuple[FloatArray, ...]
    by: tuple[int | None, ...]
    edges: tuple[FloatArray, ...]
    order: tuple[tuple[tuple[int, ...], bool], ...]
    columns: tuple[str, ...]
    sub_offset: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.kernels)

    def continues(self, i: int) -> bool:
        """Whether a visit that exhausts its retries goes on (rather than to ``fail``)."""
        k = self.kernels[i]
        return isinstance(k, CallKernel | LoopKernel) and k.retry.exhaust_continue

    def branch_probs(self, i: int, env: FloatArray) -> FloatArray:
        """Target probabilities of node ``i`` for each row of ``env`` (``(n, targets)``)."""
        table = self.probs[i]
        var = self.by[i]
        if var is None:
            return np.broadcast_to(table[0], (env.shape[0], table.shape[1]))
        bins = np.searchsorted(self.edges[i], env[:, var], side="left")
        return table[bins]

    @property
    def depth(self) -> int:
        """Nesting levels of sub-agents below this graph."""
        deepest = 0
        for k in self.kernels:
            if isinstance(k, FanOutKernel):
                deepest = max(deepest, k.item.depth + (1 if k.subagents else 0))
        return deepest

    def walk(self) -> list[tuple[str, Kernel]]:
        """Every kernel of this graph and of its subgraphs, with qualified names."""
        out: list[tuple[str, Kernel]] = []
        for name, k in zip(self.names, self.kernels, strict=True):
            out.append((name, k))
            if isinstance(k, FanOutKernel):
                out.extend((f"{name}/{sub}", kk) for sub, kk in k.item.walk())
        return out


def kernel_vars(kernel: Kernel, *, counts_only: bool = False) -> set[int]:
    """Envelope variables a kernel's visits depend on (only counts: ``counts_only``)."""
    qs: list[CQty | None] = []
    out: set[int] = set()
    if isinstance(kernel, FanOutKernel):
        qs.append(kernel.count)
        out |= graph_vars(kernel.item, counts_only=counts_only)
    elif not counts_only and isinstance(kernel, CallKernel):
        qs += [kernel.inp, kernel.out]
    elif not counts_only and isinstance(kernel, LoopKernel):
        qs += [kernel.c0, kernel.growth, kernel.out]
    out.update(q.var for q in qs if q is not None and q.var is not None and q.times)
    return out


def graph_vars(graph: CompiledGraph, *, counts_only: bool = False) -> set[int]:
    """Envelope variables anything in ``graph`` depends on (branch bins included)."""
    out = {v for v in graph.by if v is not None}
    for k in graph.kernels:
        out |= kernel_vars(k, counts_only=counts_only)
    return out


@dataclass(frozen=True)
class CompiledModel:
    """A compiled workflow: its main graph, envelope and where each price came from."""

    spec: GraphSpec
    graph: CompiledGraph
    env_names: tuple[str, ...]
    env: tuple[AnyDist, ...]
    price_sources: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None

    @property
    def currency(self) -> str:
        return self.spec.currency

    @property
    def d(self) -> int:
        return len(self.env)

    def env_upper(self) -> FloatArray:
        return np.array([d.upper() for d in self.env]) if self.env else np.zeros(0)

    def sample_env(self, rng: np.random.Generator, n: int) -> FloatArray:
        if not self.env:
            return np.zeros((n, 0))
        return np.stack([d.sample(rng, n) for d in self.env], axis=1)


class _Compiler:
    def __init__(self, spec: GraphSpec, pricer: Pricer, source: str) -> None:
        self.spec = spec
        self.pricer = pricer
        self.source = source
        self.env_index = {name: i for i, name in enumerate(spec.envelope)}
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}

    def qty(self, q: AnyDist | EnvRef | None) -> CQty | None:
        if q is None:
            return None
        if isinstance(q, EnvRef):
            return CQty(q.plus, self.env_index[q.from_], q.times)
        return CQty(q)

    @staticmethod
    def retry(spec: Retry | None) -> CRetry:
        if spec is None:
            return NO_RETRY
        regimes: tuple[tuple[float, float], ...] = ((1.0, spec.p_fail),)
        if spec.incident is not None:
            share = spec.incident.share
            regimes = ((1 - share, spec.p_fail), (share, spec.incident.p_fail))
        return CRetry(spec.max_retries, spec.failed_cost, regimes, spec.on_exhaust == "continue")

    def card(self, where: str, qual: str, node: ModelNode | LoopNode) -> RateCard | None:
        price: PriceSpec | None = node.price
        label = f"node {qual} price"
        if price is None and node.model is not None and node.model in self.spec.prices:
            price = self.spec.prices[node.model]
            label = f"graph prices[{node.model}]"
        if price is not None:
            card = card_from_spec(price, label, self.spec.currency)
        else:
            assert node.model is not None
            try:
                card = self.pricer.rate_card(node.model, node.provider)
            except (ExecBudgetError, ValueError) as exc:
                reason = str(exc).split(". To proceed")[0]
                self.problems.append(
                    f"{where}: model {node.model!r} has no usable price ({reason}); fix the "
                    f"model name, or give price: on the node or prices: {{{node.model}: ...}}"
                )
                return None
        if card.currency != self.spec.currency:
            self.problems.append(
                f"{where}: the price of {node.model!r} is in {card.currency} but the graph's "
                f"currency is {self.spec.currency}"
            )
        self.sources[qual] = card.source
        return card

    def kernel(self, where: str, qual: str, name: str, node: AnyNode) -> Kernel:
        if isinstance(node, ToolNode):
            self.sources[qual] = "tool cost in the graph"
            return CallKernel(
                name, True, flat=node.cost, retry=self.retry(node.retry), latency=node.latency_s
            )
        if isinstance(node, ModelNode):
            card = self.card(where, qual, node) if node.cost is None else None
            if node.cost is not None:
                self.sources[qual] = "cost per call in the graph"
            return CallKernel(
                name,
                False,
                card=card,
                flat=node.cost,
                inp=self.qty(node.input_tokens),
                out=self.qty(node.output_tokens),
                cache_share=node.cache_read_share,
                retry=self.retry(node.retry),
                latency=node.latency_s,
            )
        if isinstance(node, LoopNode):
            card = self.card(where, qual, node) if node.cost_per_step is None else None
            if node.cost_per_step is not None:
                self.sources[qual] = "cost per step in the graph"
            regimes: tuple[tuple[float, float], ...] = ((1.0, node.continue_p),)
            if node.stuck is not None:
                s = node.stuck
                regimes = ((1 - s.share, node.continue_p), (s.share, s.continue_p))
            ctx = node.context
            return LoopKernel(
                name,
                card=card,
                flat=node.cost_per_step,
                c0=self.qty(ctx.initial) if ctx else None,
                growth=(self.qty(ctx.growth_per_step) or ZERO) if ctx else ZERO,
                cmax=float(ctx.max) if ctx and ctx.max else float("inf"),
                out=self.qty(node.output_tokens),
                regimes=regimes,
                max_steps=node.max_steps,
                max_fail=node.on_max == "fail",
                cache=node.prompt_cache,
                n_tools=node.tool_calls_per_step,
                tool_cost=node.tool_cost,
                retry=self.retry(node.retry),
                latency=node.latency_s,
                tool_latency=node.tool_latency_s,
            )
        assert isinstance(node, FanOutNode)
        qcount = self.qty(node.count)
        assert qcount is not None
        sub = self.spec.subgraphs[node.item]
        item = self.graph(f"{qual}/", sub.entry, sub.nodes)
        return FanOutKernel(name, qcount, item, node.max_concurrency, node.subagents)

    def graph(self, prefix: str, entry: str, nodes: Mapping[str, AnyNode]) -> CompiledGraph:
        names = tuple(nodes)
        index = {n: i for i, n in enumerate(names)}
        label = prefix.rstrip("/")
        kernels = []
        targets, probs, by, edges = [], [], [], []
        g = nx.DiGraph()
        g.add_nodes_from(range(len(names)))
        for i, (name, node) in enumerate(nodes.items()):
            where = f"node {prefix}{name}"
            kernels.append(self.kernel(where, f"{prefix}{name}", name, node))
            table = branch_table(where, node.next, self.problems)
            tgt = np.array(
                [index.get(t, DONE if t == "done" else FAIL) for t in table.targets],
                dtype=np.int64,
            )
            targets.append(tgt)
            probs.append(table.probs)
            by.append(self.env_index[table.by] if table.by is not None else None)
            edges.append(np.asarray(table.edges, dtype=np.float64))
            for t, col in zip(tgt, table.probs.T, strict=True):
                if t >= 0 and np.any(col > 0):
                    g.add_edge(i, int(t))
        cond = nx.condensation(g)
        order = []
        for c in nx.topological_sort(cond):
            members = tuple(sorted(cond.nodes[c]["members"]))
            cyclic = len(members) > 1 or g.has_edge(members[0], members[0])
            order.append((members, cyclic))
        columns = list(names)
        offsets = []
        for name, k in zip(names, kernels, strict=True):
            if isinstance(k, FanOutKernel):
                offsets.append(len(columns))
                columns.extend(f"{name}/{c}" for c in k.item.columns)
            else:
                offsets.append(-1)
        return CompiledGraph(
            label,
            names,
            tuple(kernels),
            index[entry],
            tuple(targets),
            tuple(probs),
            tuple(by),
            tuple(edges),
            tuple(order),
            tuple(columns),
            tuple(offsets),
        )


def compile_graph(
    spec: GraphSpec, pricer: Pricer | None = None, *, source: str | None = None
) -> CompiledModel:
    """
    Check and compile ``spec``; model prices come from ``pricer`` (default: the price book).

    Raises:
        GraphError: a structural problem, or a model with no usable price (the message
            names every node concerned).
    """
    check_graph(spec, source)
    c = _Compiler(spec, pricer or BookPricer(), source or repr(spec.name))
    graph = c.graph("", spec.entry, spec.nodes)
    if c.problems:
        raise GraphError(source or repr(spec.name), c.problems)
    return CompiledModel(
        spec,
        graph,
        tuple(spec.envelope),
        tuple(spec.envelope.values()),
        c.sources,
        source,
    )


__all__ = [
    "DONE",
    "FAIL",
    "CompiledGraph",
    "CompiledModel",
    "Kernel",
    "compile_graph",
    "graph_vars",
    "kernel_vars",
]
