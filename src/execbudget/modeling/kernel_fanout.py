"""
Fan-out: ``K`` items, each running a subgraph (a sub-agent, or the work on one input).

The total is a random sum, so its moments are the compound formulas
``E[ΣX] = E[K]·μ`` and ``E[(ΣX)²] = E[K]·Var X + E[K²]·μ²`` and its transform is the count's
probability generating function evaluated at the item transform, ``G_K(φ_item)``. The
engines recurse into the item graph for ``μ``, ``E[X²]`` and ``φ_item``; the sums here are
the only fan-out-specific maths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._arrays import ComplexArray, FloatArray
from .common import FAN_OUT, N_DIMS, CQty, VisitMoments
from .distributions import Atoms

if TYPE_CHECKING:
    from .compiled import CompiledGraph


@dataclass(frozen=True)
class FanOutKernel:
    """A compiled ``fan_out`` node: ``count`` items of the subgraph ``item``."""

    name: str
    count: CQty
    item: CompiledGraph
    max_concurrency: int | None = None
    subagents: bool = True

    def count_support(self, env_row: FloatArray) -> Atoms:
        """The exact distribution of ``K`` for one envelope point (shape ``(1, d)``)."""
        base = self.count.base.discrete_support()
        assert base is not None, "fan-out counts are validated to be discrete"
        shift = float(self.count.shift(env_row)[0])
        return Atoms(base.points + shift, base.weights)

    def moments(
        self, env: FloatArray, item_mean: FloatArray, item_second: FloatArray
    ) -> VisitMoments:
        """Visit moments from the item graph's run moments (``(N_DIMS, A)`` each)."""
        a = env.shape[0]
        base = self.count.base
        shift = self.count.shift(env)
        ek = base.mean() + shift
        ek2 = base.second_moment() + 2 * shift * base.mean() + shift**2
        mu = item_mean.copy()
        s = item_second.copy()
        # every item is itself one branch started
        s[FAN_OUT] = 1 + 2 * mu[FAN_OUT] + s[FAN_OUT]
        mu[FAN_OUT] = 1 + mu[FAN_OUT]
        vm = VisitMoments.zeros(a)
        vm.m_ok[:] = ek * mu
        vm.s_ok[:] = ek * (s - mu**2) + ek2 * mu**2
        assert vm.m_ok.shape == (N_DIMS, a)
        return vm

    def pgf(self, env_row: FloatArray, item_cf: ComplexArray) -> ComplexArray:
        """``Σ_k P(K=k)·φ_item^k`` (Horner's rule over the support of ``K``)."""
        sup = self.count_support(env_row)
        ks = np.rint(sup.points).astype(np.int64)
        top = int(ks.max())
        coef = np.zeros(top + 1)
        np.add.at(coef, ks, sup.weights)
        acc = np.full(item_cf.shape, coef[top], dtype=np.complex128)
        for k in range(top - 1, -1, -1):
            acc = acc * item_cf + coef[k]
        return acc


__all__ = ["FanOutKernel"]
