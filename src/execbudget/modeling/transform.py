"""
The transform method: the exact distribution of a run total, loops included (§4.3b).

Money (or a counter) is put on a lattice ``k·h``. Each visit's distribution becomes a
transform (its pmf's FFT, tilted by ``exp(-θk)`` so wrap-around is damped). For every
frequency ω the run's transform solves one small linear system

    (I − Q∘Ψ(ω)) φ(ω) = r(ω)

where ``Ψ_i(ω)`` is the transform of a visit to node ``i`` (by outcome) and ``r`` collects the
transitions into ``done`` and ``fail``; all frequencies are solved at once with a batched
``numpy.linalg.solve``. Fan-outs are ``G_K(φ_item)``, loops a sum over the ending step. The
inverse FFT of ``φ_entry`` is the pmf of the total.

It assumes visit costs independent given the state, so a run's shared envelope is
handled by mixing over envelope atoms (exact for count variables and branch bins,
approximate for continuous sizes). That makes it the oracle for tails in the tests and for
exact cap-hit probabilities of counters (steps, calls, retries, tool calls, branches), whose
distributions do not depend on token sizes at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._arrays import ComplexArray, FloatArray
from .common import COST, DIMS, FAN_OUT, TOKENS, Lattice
from .compiled import CompiledGraph, CompiledModel, graph_vars, kernel_vars
from .kernel_fanout import FanOutKernel
from .markov import envelope_atoms, exact_moments

_BLOCK = 8192
#: Mass allowed past the end of the lattice, and how often the lattice may be widened.
_LOST = 1e-7
_GROW = 4


Cache = dict[tuple[int, tuple[float, ...]], tuple[ComplexArray, ComplexArray]]


def _key(obj: object, deps: set[int], env: FloatArray) -> tuple[int, tuple[float, ...]]:
    return id(obj), tuple(float(env[0, v]) for v in sorted(deps))


def run_cf(
    graph: CompiledGraph, dim: int, lat: Lattice, env: FloatArray, cache: Cache | None = None
) -> ComplexArray:
    """The transform of one run's total ``dim`` through ``graph`` at envelope point ``env``.

    ``cache`` keeps visit transforms across envelope points that only differ in variables
    a node does not read (pass the same dict for every point of one lattice)."""
    cache = {} if cache is None else cache
    gkey = _key(graph, graph_vars(graph), env)
    if gkey in cache:
        return cache[gkey][0]
    n = graph.n
    go = np.zeros((n, lat.m), dtype=np.complex128)
    stop = np.zeros((n, lat.m), dtype=np.complex128)
    b_t = np.zeros((n, n))
    for i, k in enumerate(graph.kernels):
        key = _key(k, kernel_vars(k), env)
        if key in cache:
            ok, ex = cache[key]
        elif isinstance(k, FanOutKernel):
            item = run_cf(k.item, dim, lat, env, cache)
            if dim == FAN_OUT:
                item = item * lat.power(1)
            ok, ex = k.pgf(env, item), np.zeros(lat.m, dtype=np.complex128)
        else:
            ok, ex = k.cf(dim, lat, env)
        cache[key] = (ok, ex)
        cont = graph.continues(i)
        probs = graph.branch_probs(i, env)[0]
        absorbed = 0.0
        for t, p in zip(graph.targets[i], probs, strict=True):
            if t >= 0:
                b_t[i, t] += p
            else:
                absorbed += p
        go[i] = ok + (ex if cont else 0.0)
        stop[i] = go[i] * absorbed + (0.0 if cont else ex)
    # back-substitute over the strongly connected components, sinks first: a node outside
    # any loop is one multiply-add per frequency; only loops need a (batched) solve
    phi = np.zeros((n, lat.m), dtype=np.complex128)
    for members, cyclic in reversed(graph.order):
        inside = list(members)
        rhs = stop[inside].copy()
        for row, i in enumerate(inside):
            for j in np.flatnonzero(b_t[i]):
                if j not in members:
                    rhs[row] += go[i] * b_t[i, j] * phi[j]
        if not cyclic:
            phi[inside[0]] = rhs[0]
        elif len(inside) == 1:
            i = inside[0]
            phi[i] = rhs[0] / (1.0 - go[i] * b_t[i, i])
        else:
            sub = b_t[np.ix_(inside, inside)]
            eye = np.eye(len(inside))
            for lo in range(0, lat.m, _BLOCK):
                sl = slice(lo, min(lo + _BLOCK, lat.m))
                a = eye[None, :, :] - go[inside][:, sl].T[:, :, None] * sub[None, :, :]
                phi[inside, sl] = np.linalg.solve(a, rhs[:, sl].T[:, :, None])[:, :, 0].T
    out: ComplexArray = np.asarray(phi[graph.entry], dtype=np.complex128)
    cache[gkey] = (out, out)
    return out


@dataclass(frozen=True)
class TransformResult:
    """A pmf on a lattice: ``pmf[k]`` is the probability of ``k·h``."""

    dim: str
    h: float
    pmf: FloatArray
    lost: float = 0.0  # mass beyond the lattice (left out)

    @property
    def values(self) -> FloatArray:
        return np.asarray(np.arange(self.pmf.shape[0]) * self.h, dtype=np.float64)

    @property
    def mass(self) -> float:
        return float(self.pmf.sum())

    def mean(self) -> float:
        return float(self.pmf @ self.values)

    def sd(self) -> float:
        m = self.mean()
        return math.sqrt(max(float(self.pmf @ self.values**2) - m * m, 0.0))

    def cdf(self) -> FloatArray:
        return np.cumsum(self.pmf)

    def quantile(self, q: float) -> float:
        """The smallest lattice value with ``P(X <= x) >= q``."""
        i = int(np.searchsorted(self.cdf(), q - 1e-12))
        return float(min(i, self.pmf.shape[0] - 1) * self.h)

    def exceed(self, x: float) -> float:
        """``P(X > x)``."""
        k = math.floor(x / self.h + 1e-9)
        return float(self.pmf[k + 1 :].sum()) if k + 1 < self.pmf.shape[0] else 0.0

    def cap_for(self, eps: float) -> float:
        """The smallest lattice value ``x`` with ``P(X > x) <= eps``."""
        tail = 1.0 - self.cdf()
        i = int(np.flatnonzero(tail <= eps)[0]) if np.any(tail <= eps) else self.pmf.shape[0] - 1
        return float(i * self.h)


def distribution(
    model: CompiledModel,
    dim: str = "cost",
    *,
    m: int = 1 << 16,
    upper: float | None = None,
    bins: int = 16,
    sigmas: float = 25.0,
) -> TransformResult:
    """
    The exact pmf of a run's total ``dim`` (``cost``, ``tokens`` or a counter).

    The lattice spans ``upper`` (default: mean + ``sigmas``·sd from the exact moments);
    counters use a unit lattice.
    """
    d = DIMS.index(dim)
    integer = d not in (COST, TOKENS)
    if upper is None:
        mom = exact_moments(model, bins=bins)
        upper = float(mom.mean[d] + sigmas * mom.sd[d]) + (10.0 if integer else 0.0)
        upper = max(upper, 1e-9)
    pts, w = envelope_atoms(model, bins, counts_only=integer)
    for _ in range(_GROW):
        lat = Lattice.for_range(upper, m if not integer else 64, integer=integer)
        cache: Cache = {}
        cf = np.zeros(lat.m, dtype=np.complex128)
        for p, wt in zip(pts, w, strict=True):
            cf += wt * run_cf(model.graph, d, lat, p[None, :], cache)
        pmf = lat.invert(cf)
        lost = 1.0 - float(pmf.sum())
        if lost < _LOST:
            break
        # mass beyond the lattice: widen it (and refine it) and solve again
        upper *= 4
        m = min(m * 2, 1 << 20)
    return TransformResult(dim, lat.h, pmf, lost)


__all__ = ["TransformResult", "distribution", "run_cf"]
