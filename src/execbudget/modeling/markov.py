"""
Exact moments by absorbing Markov chains (costmodel.md §4.2).

Transient states are the nodes; absorbing states are ``done`` and ``fail``. For each
envelope atom the engine solves, with ``I − Q``:

* ``t₁ = N·m`` — expected total from each node (``N = (I − Q)⁻¹``, ``m`` the mean per visit);
* ``t₂ = N·(s + 2·w∘(B·t₁))`` — the second moment, where ``s`` is the per-visit second
  moment and ``w`` the mean of the visits that continue (a visit's cost may depend on its
  outcome: an exhausted retry goes to ``fail``);
* ``α·N`` — expected visits per node, and ``α·N·R`` — absorption probabilities.

It does this for all seven dimensions at once (cost, tokens, steps, calls, retries, tool
calls, branches), so the mean and variance of every counter are exact too. The run's
envelope is replaced by moment-matched atoms (two per bin), under which every quantity that
is quadratic in an envelope variable keeps its exact mean and variance; the results are
mixed over the atoms. Fan-out nodes recurse into their item graph.

Sensitivity to each probability (branch, retry failure, loop continuation) is the central
difference of the exact mean, the branch's other targets rescaled so the row still sums
to one.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from ._arrays import FloatArray, IntArray
from .common import COST, DIMS, N_DIMS, CRetry, VisitMoments
from .compiled import DONE, FAIL, CompiledGraph, CompiledModel, Kernel, graph_vars, kernel_vars
from .kernel_call import CallKernel
from .kernel_fanout import FanOutKernel
from .kernel_loop import LoopKernel

#: Envelope atoms: at most this many points in the product grid.
_MAX_POINTS = 4096


def _branch_edges(graph: CompiledGraph, out: dict[int, set[float]]) -> None:
    for var, edges in zip(graph.by, graph.edges, strict=True):
        if var is not None:
            out.setdefault(var, set()).update(float(e) for e in edges)
    for k in graph.kernels:
        if isinstance(k, FanOutKernel):
            _branch_edges(k.item, out)


def envelope_atoms(
    model: CompiledModel, bins: int = 32, *, counts_only: bool = False
) -> tuple[FloatArray, FloatArray]:
    """
    Points ``(A, d)`` and weights ``(A,)`` standing in for the envelope.

    Variables nothing depends on collapse to their mean; the others get ``bins`` bins each
    (fewer when there are several, to keep the product grid under 4,096 points), with bin
    edges at every branch edge so branch probabilities are constant on each atom.
    """
    d = model.d
    if d == 0:
        return np.zeros((1, 0)), np.ones(1)
    used = graph_vars(model.graph, counts_only=counts_only)
    edges: dict[int, set[float]] = {}
    _branch_edges(model.graph, edges)
    per = bins
    if len(used) > 1:
        per = max(2, int((_MAX_POINTS ** (1 / len(used))) // 2))
    axes = []
    for i, dist in enumerate(model.env):
        if i in used:
            at = dist.atoms(min(per, bins), tuple(sorted(edges.get(i, ()))))
            axes.append((at.points, at.weights))
        else:
            axes.append((np.array([dist.mean()]), np.ones(1)))
    pts = np.array(list(itertools.product(*(a[0] for a in axes))), dtype=np.float64)
    wts = np.prod(np.array(list(itertools.product(*(a[1] for a in axes)))), axis=1)
    return pts.reshape(-1, d), wts / wts.sum()


@dataclass(frozen=True)
class GraphSolution:
    """Per-atom results of one graph: run moments ``(N_DIMS, A)``, visits ``(n, A)``."""

    mean: FloatArray
    second: FloatArray
    visits: FloatArray
    node_mean: FloatArray  # (N_DIMS, n, A)
    p_done: FloatArray
    p_fail: FloatArray
    entry_mean: FloatArray  # (N_DIMS, A) mean of one visit of the entry node


def _distinct(env: FloatArray, deps: set[int]) -> tuple[FloatArray, IntArray] | None:
    """Rows of ``env`` that differ on ``deps``, and the map back (None: all distinct)."""
    if env.shape[0] <= 1:
        return None
    cols = sorted(deps)
    _, first, inverse = np.unique(env[:, cols], axis=0, return_index=True, return_inverse=True)
    if first.shape[0] == env.shape[0]:
        return None
    return env[first], inverse.ravel()


Memo = dict[int, VisitMoments]


def visit_moments(kernel: Kernel, env: FloatArray, memo: Memo | None = None) -> VisitMoments:
    """
    One visit's moments per envelope atom, computed once per distinct relevant point.

    ``memo`` (keyed by kernel identity, for one fixed ``env``) lets repeated solves of
    slightly changed graphs — the sensitivity analysis — recompute only what changed.
    """
    if memo is not None and id(kernel) in memo:
        return memo[id(kernel)]
    distinct = _distinct(env, kernel_vars(kernel))
    if distinct is not None:
        rows, back = distinct
        vm = visit_moments(kernel, rows)
        vm = VisitMoments(
            vm.p_ok[back], vm.m_ok[:, back], vm.s_ok[:, back], vm.m_exh[:, back], vm.s_exh[:, back]
        )
    elif isinstance(kernel, FanOutKernel):
        sol = solve_graph(kernel.item, env, memo)
        vm = kernel.moments(env, sol.mean, sol.second)
    else:
        vm = kernel.moments(env)
    if memo is not None:
        memo[id(kernel)] = vm
    return vm


def solve_graph(graph: CompiledGraph, env: FloatArray, memo: Memo | None = None) -> GraphSolution:
    """Exact moments of every dimension of one graph for each envelope atom (row of env)."""
    n, a = graph.n, env.shape[0]
    vms = [visit_moments(k, env, memo) for k in graph.kernels]
    p_ok = np.stack([vm.p_ok for vm in vms])  # (n, A)
    m_unc = np.stack([vm.mean() for vm in vms], axis=1)  # (D, n, A)
    s_unc = np.stack([vm.second() for vm in vms], axis=1)
    cont = np.array([graph.continues(i) for i in range(n)])
    m_go = np.stack(
        [
            vm.p_ok * vm.m_ok + (vm.p_exh * vm.m_exh if c else 0.0)
            for vm, c in zip(vms, cont, strict=True)
        ],
        axis=1,
    )
    probs = [graph.branch_probs(i, env) for i in range(n)]  # (A, targets) each
    binned = [i for i in range(n) if graph.by[i] is not None]
    keys = (
        np.stack([np.searchsorted(graph.edges[i], env[:, _var(graph, i)]) for i in binned], axis=1)
        if binned
        else np.zeros((a, 1), dtype=np.int64)
    )
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    mean = np.zeros((N_DIMS, a))
    second = np.zeros((N_DIMS, a))
    visits = np.zeros((n, a))
    p_done = np.zeros(a)
    p_fail = np.zeros(a)
    for gi in np.unique(group):
        idx = np.flatnonzero(group == gi)
        rep = idx[0]
        b_t = np.zeros((n, n))
        done = np.zeros(n)
        fail = np.zeros(n)
        for i in range(n):
            for t, p in zip(graph.targets[i], probs[i][rep], strict=True):
                if t >= 0:
                    b_t[i, t] += p
                elif t == DONE:
                    done[i] += p
                else:
                    fail[i] += p
        pok = p_ok[:, rep]
        pex = 1.0 - pok
        go = pok + np.where(cont, pex, 0.0)
        q = go[:, None] * b_t
        to_done = go * done
        to_fail = go * fail + np.where(cont, 0.0, pex)
        # numpy's solver: scipy's LU showed millisecond stalls on tiny matrices
        m_i_q = np.eye(n) - q
        ag = idx.shape[0]
        rhs1 = m_unc[:, :, idx].transpose(1, 0, 2).reshape(n, -1)
        t1 = np.linalg.solve(m_i_q, rhs1)
        cross = m_go[:, :, idx].transpose(1, 0, 2).reshape(n, -1) * (b_t @ t1)
        rhs2 = s_unc[:, :, idx].transpose(1, 0, 2).reshape(n, -1) + 2 * cross
        t2 = np.linalg.solve(m_i_q, rhs2)
        alpha = np.zeros(n)
        alpha[graph.entry] = 1.0
        an = np.linalg.solve(m_i_q.T, alpha)
        visits[:, idx] = an[:, None]
        mean[:, idx] = t1[graph.entry].reshape(N_DIMS, ag)
        second[:, idx] = t2[graph.entry].reshape(N_DIMS, ag)
        p_done[idx] = an @ to_done
        p_fail[idx] = an @ to_fail
    node_mean = visits[None, :, :] * m_unc
    return GraphSolution(mean, second, visits, node_mean, p_done, p_fail, m_unc[:, graph.entry, :])


@dataclass(frozen=True)
class ExactMoments:
    """Exact run moments of every dimension, mixed over the envelope."""

    mean: FloatArray  # (N_DIMS,)
    var: FloatArray
    visits: dict[str, float]
    node_cost: dict[str, float]
    p_done: float
    p_fail: float
    entry_cost: float
    atoms: int
    elapsed_s: float

    @property
    def sd(self) -> FloatArray:
        return np.sqrt(np.maximum(self.var, 0.0))

    def of(self, dim: str) -> tuple[float, float]:
        i = DIMS.index(dim)
        return float(self.mean[i]), float(self.sd[i])


def exact_moments(model: CompiledModel, *, bins: int = 32) -> ExactMoments:
    """Solve the whole model exactly (see the module docstring)."""
    t0 = time.perf_counter()
    pts, w = envelope_atoms(model, bins)
    sol = solve_graph(model.graph, pts)
    mean = sol.mean @ w
    second = sol.second @ w
    var = second - mean**2
    # E[X²] − E[X]² cancels catastrophically for (near-)deterministic totals
    var[var < 1e-12 * mean**2] = 0.0
    g = model.graph
    return ExactMoments(
        mean=mean,
        var=var,
        visits={name: float(sol.visits[i] @ w) for i, name in enumerate(g.names)},
        node_cost={name: float(sol.node_mean[COST, i] @ w) for i, name in enumerate(g.names)},
        p_done=float(sol.p_done @ w),
        p_fail=float(sol.p_fail @ w),
        entry_cost=float(sol.entry_mean[COST] @ w),
        atoms=int(w.shape[0]),
        elapsed_s=time.perf_counter() - t0,
    )


# -- sensitivity ------------------------------------------------------------------------
@dataclass(frozen=True)
class Sensitivity:
    """How the expected run cost moves with one probability of the model."""

    parameter: str
    value: float
    derivative: float  # d E[cost] / d p
    elasticity: float  # (p / E[cost]) · d E[cost] / d p


Builder = Callable[[float], CompiledGraph]


def _with_kernel(graph: CompiledGraph, i: int, kernel: Kernel) -> CompiledGraph:
    kernels = list(graph.kernels)
    kernels[i] = kernel
    return dataclasses.replace(graph, kernels=tuple(kernels))


def _with_probs(graph: CompiledGraph, i: int, j: int, p: float) -> CompiledGraph:
    table = graph.probs[i].copy()
    old = table[0, j]
    others = 1.0 - old
    scale = (1.0 - p) / others if others > 0 else 0.0
    table[0] *= scale
    table[0, j] = p
    probs = list(graph.probs)
    probs[i] = table
    return dataclasses.replace(graph, probs=tuple(probs))


def _with_regime(retry: CRetry, p: float) -> CRetry:
    regimes = ((retry.regimes[0][0], p), *retry.regimes[1:])
    return CRetry(retry.r, retry.f, regimes, retry.exhaust_continue)


def _retry_p(graph: CompiledGraph, i: int, k: CallKernel | LoopKernel, p: float) -> CompiledGraph:
    return _with_kernel(graph, i, dataclasses.replace(k, retry=_with_regime(k.retry, p)))


def _item_p(
    graph: CompiledGraph, i: int, k: FanOutKernel, build: Builder, p: float
) -> CompiledGraph:
    return _with_kernel(graph, i, dataclasses.replace(k, item=build(p)))


def _var(graph: CompiledGraph, i: int) -> int:
    var = graph.by[i]
    assert var is not None
    return var


def _parameters(graph: CompiledGraph, prefix: str = "") -> Iterator[tuple[str, float, Builder]]:
    for i, (name, k) in enumerate(zip(graph.names, graph.kernels, strict=True)):
        label = f"{prefix}{name}"
        table = graph.probs[i]
        if table.shape[0] == 1 and table.shape[1] > 1:
            for j, t in enumerate(graph.targets[i]):
                target = "done" if t == DONE else "fail" if t == FAIL else graph.names[t]
                yield f"{label} → {target}", float(table[0, j]), partial(_with_probs, graph, i, j)
        if isinstance(k, CallKernel | LoopKernel) and k.retry.r + k.retry.q_exh > 0:
            yield f"{label} retry p_fail", k.retry.regimes[0][1], partial(_retry_p, graph, i, k)
        if isinstance(k, LoopKernel):
            for r, (w, c) in enumerate(k.regimes):
                what = "continue_p" if r == 0 else "stuck continue_p"

                def build(
                    p: float, i: int = i, k: LoopKernel = k, r: int = r, w: float = w
                ) -> CompiledGraph:
                    regimes = list(k.regimes)
                    regimes[r] = (w, p)
                    return _with_kernel(graph, i, dataclasses.replace(k, regimes=tuple(regimes)))

                yield f"{label} {what}", c, build
        if isinstance(k, FanOutKernel):
            for sub_label, value, sub_build in _parameters(k.item, f"{label}/"):
                yield sub_label, value, partial(_item_p, graph, i, k, sub_build)


def sensitivities(model: CompiledModel, *, bins: int = 8) -> list[Sensitivity]:
    """Derivative and elasticity of the expected run cost for every probability."""
    pts, w = envelope_atoms(model, bins)
    memo: Memo = {}
    alive: list[CompiledGraph] = []  # the memo is keyed by id(): no id may be reused
    base = float(solve_graph(model.graph, pts, memo).mean[COST] @ w)
    out = []
    for label, p, build in _parameters(model.graph):
        h = 1e-4 if p <= 0 else min(1e-4, p / 2, (1 - p) / 2)
        lo, hi = (p, p + h) if p <= 0 else (p - h, p + h)
        g_hi, g_lo = build(hi), build(lo)
        alive += [g_hi, g_lo]
        e_hi = float(solve_graph(g_hi, pts, memo).mean[COST] @ w)
        e_lo = float(solve_graph(g_lo, pts, memo).mean[COST] @ w)
        deriv = (e_hi - e_lo) / (hi - lo)
        out.append(Sensitivity(label, p, deriv, deriv * p / base if base else 0.0))
    out.sort(key=lambda s: -abs(s.elasticity))
    return out


__all__ = [
    "ExactMoments",
    "GraphSolution",
    "Sensitivity",
    "envelope_atoms",
    "exact_moments",
    "sensitivities",
    "solve_graph",
]
