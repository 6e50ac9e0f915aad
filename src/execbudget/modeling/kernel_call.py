"""
One model or tool call, with its retries: the leaf every other construct is built from.

A visit makes ``1 + j`` attempts (``j`` failures before a success, at most ``r``), or
``r + 1`` failed attempts when retries run out. Every attempt of a model call resends the
**same** input (drawn once per visit) and draws its own output; a failed attempt costs
``f`` of a normal one. So, with ``S`` the input part and ``N`` the per-attempt output part
of one attempt, a successful visit costs ``(1 + f·j)·S + N₀ + f·Σ N_l`` — the formula
behind the exact moments, the Monte Carlo draw and the transform below.

Model calls are priced from tokens (input at the blend of input and cache-read rates given
by ``cache_share``, output at the output rate, the tier chosen by the input) or from a flat
cost per call; tool calls from their cost distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._arrays import ComplexArray, FloatArray
from .common import (
    CALLS,
    COST,
    DENIED,
    DENY_CALL_COST,
    DENY_INPUT,
    EXHAUSTED,
    N_DIMS,
    NO_RETRY,
    RETRIES,
    TOKENS,
    TOOL_CALLS,
    CQty,
    CRetry,
    Lattice,
    VisitDraw,
    VisitMoments,
)
from .distributions import AnyDist
from .rates import RateCard
from .simcaps import SimCaps, sequence


@dataclass(frozen=True)
class CallKernel:
    """A compiled ``model`` or ``tool`` node."""

    name: str
    tool: bool
    card: RateCard | None = None
    flat: AnyDist | None = None
    inp: CQty | None = None
    out: CQty | None = None
    cache_share: float = 0.0
    retry: CRetry = NO_RETRY
    latency: AnyDist | None = None

    # -- rates ---------------------------------------------------------------------------
    @property
    def count_dim(self) -> int:
        return TOOL_CALLS if self.tool else CALLS

    @property
    def tokens(self) -> bool:
        return self.inp is not None and self.out is not None

    def _levels(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Per price level: input rate (cache blend), hold input rate, output rate, fee."""
        assert self.card is not None
        c = self.card
        a = (1 - self.cache_share) * c.column("input") + self.cache_share * c.column("cache_read")
        hold = np.array([lv.hold_input for lv in c.levels])
        return a, hold, c.column("output"), c.column("per_request")

    # -- exact moments -------------------------------------------------------------------
    def _terms(
        self,
        env: FloatArray,
        a: FloatArray,
        b: FloatArray,
        fee: FloatArray,
        segments: list[tuple[float, float]],
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``Z1 = E[S + μ_N]``, ``Z2 = E[(S + μ_N)²]``, ``V = E[σ²_N]`` of one attempt."""
        assert self.inp is not None and self.out is not None
        c = self.inp.shift(env)
        mu_o = self.out.mean(env)
        var_o = self.out.variance()
        z1 = np.zeros(env.shape[0])
        z2 = np.zeros(env.shape[0])
        v = np.zeros(env.shape[0])
        whole = len(segments) == 1
        for k, (lo, hi) in enumerate(segments):
            if whole:  # no tiers: the plain moments, shifted by the envelope part
                base = self.inp.base
                w, m1, m2 = (
                    np.ones_like(c),
                    np.full_like(c, base.mean()),
                    np.full_like(c, base.second_moment()),
                )
            else:
                w, m1, m2 = self.inp.base.partial_moments(lo - c, hi - c)
            big1 = m1 + c * w
            big2 = m2 + 2 * c * m1 + c**2 * w
            mu = b[k] * mu_o + fee[k]
            z1 += a[k] * big1 + w * mu
            z2 += a[k] ** 2 * big2 + 2 * a[k] * big1 * mu + w * mu**2
            v += w * b[k] ** 2 * var_o
        return z1, z2, v

    def moments(self, env: FloatArray) -> VisitMoments:
        """Moments of one visit for each envelope atom (rows of ``env``)."""
        n = env.shape[0]
        vm = VisitMoments.zeros(n)
        rt = self.retry
        r, f = rt.r, rt.f
        vm.p_ok[:] = 1.0 - rt.q_exh
        e1, e2, ej, ej2, ea, ea2 = rt.stats
        cd = self.count_dim
        vm.m_ok[cd], vm.s_ok[cd] = ea, ea2
        vm.m_exh[cd], vm.s_exh[cd] = r + 1, (r + 1) ** 2
        vm.m_ok[RETRIES], vm.s_ok[RETRIES] = ej, ej2
        vm.m_exh[RETRIES], vm.s_exh[RETRIES] = r, r**2

        def fill(dim: int, z1: FloatArray, z2: FloatArray, v: FloatArray) -> None:
            vm.m_ok[dim] = e1 * z1
            vm.s_ok[dim] = e2 * z2 + (1 + f * f * ej) * v
            vm.m_exh[dim] = f * (r + 1) * z1
            vm.s_exh[dim] = f * f * (r + 1) ** 2 * z2 + f * f * (r + 1) * v

        if self.flat is not None:
            mu, s2 = self.flat.mean(), self.flat.second_moment()
            fill(COST, np.full(n, mu), np.full(n, mu * mu), np.full(n, s2 - mu * mu))
        elif self.card is not None:
            a, _, b, fee = self._levels()
            fill(COST, *self._terms(env, a, b, fee, self.card.segments))
        if self.tokens:
            one = np.ones(1)
            fill(TOKENS, *self._terms(env, one, one, np.zeros(1), [(-math.inf, math.inf)]))
        return vm

    # -- Monte Carlo ---------------------------------------------------------------------
    def sample(
        self,
        rng: np.random.Generator,
        env: FloatArray,
        caps: SimCaps | None = None,
        remaining: FloatArray | None = None,
    ) -> VisitDraw:
        """Draw ``len(env)`` visits; with ``caps``, replay the runtime's holds."""
        n = env.shape[0]
        draw = VisitDraw.empty(n)
        if n == 0:
            return draw
        rt = self.retry
        j, exh = rt.sample(rng, n)
        succ = ~exh
        att = j + succ
        inp = self.inp.sample(rng, env) if self.inp is not None else None
        priced = self.flat is None and self.card is not None and inp is not None
        if priced:
            assert self.card is not None and inp is not None
            a_l, hold_l, b_l, fee_l = self._levels()
            lvl = self.card.level_of(inp)
            a, hold_in, b, fee = a_l[lvl], hold_l[lvl], b_l[lvl], fee_l[lvl]
        allow = np.full(n, math.inf)
        pre = np.full(n, -1, dtype=np.int8)
        if caps is not None and not self.tool:
            allow[:] = caps.max_output_tokens
            if inp is not None:
                pre[inp > caps.max_input_tokens] = DENY_INPUT
            if priced:
                assert inp is not None
                allow = caps.allowance(inp * hold_in + fee, b)
                pre[(pre < 0) & (allow < caps.min_output_tokens)] = DENY_CALL_COST
            att = np.where(pre >= 0, 0, att)
        total = int(att.sum())
        owner = np.repeat(np.arange(n), att)
        first = np.cumsum(att) - att
        pos = np.arange(total) - first[owner]
        failed = ~((pos == att[owner] - 1) & succ[owner])
        weight = np.where(failed, rt.f, 1.0)
        out = self.out.sample(rng, env[owner]) if self.out is not None else None
        clamped_att = np.zeros(total, dtype=bool)
        if out is not None and caps is not None and not self.tool:
            lim = allow[owner]
            clamped_att = out > lim
            out = np.minimum(out, lim)
        use = np.zeros((total, N_DIMS))
        if self.flat is not None:
            use[:, COST] = weight * self.flat.sample(rng, total)
        elif priced:
            assert out is not None and inp is not None
            o = owner
            use[:, COST] = weight * (inp[o] * a[o] + fee[o] + b[o] * out)
        if self.tokens:
            assert out is not None and inp is not None
            use[:, TOKENS] = weight * (inp[owner] + out)
        use[:, self.count_dim] = 1.0
        use[:, RETRIES] = pos > 0
        keep = np.ones(total, dtype=bool)
        run_denied = np.full(n, -1, dtype=np.int8)
        if remaining is not None and caps is not None and caps.has_run_limits:
            need = use.copy()
            if priced:
                assert inp is not None
                o = owner
                need[:, COST] = inp[o] * hold_in[o] + fee[o] + b[o] * caps.min_output_tokens
                need[:, TOKENS] = inp[o] + caps.min_output_tokens
            keep, use, run_denied, clamped_run = sequence(owner, use, need, remaining)
            draw.clamped |= clamped_run
        ko = owner[keep]
        if total == n and keep.all():  # one attempt per visit: no folding needed
            draw.use = use
        else:
            for dim in range(N_DIMS):
                if use[:, dim].any():
                    draw.use[:, dim] = np.bincount(ko, weights=use[keep, dim], minlength=n)
        ran = np.bincount(ko, minlength=n) > 0
        if inp is not None and not self.tool:
            draw.max_in = np.where(ran, inp, 0.0)
        if out is not None and not self.tool:
            np.maximum.at(draw.max_out, ko, out[keep] * (weight[keep] > 0))
        if caps is not None and priced:
            assert inp is not None
            hold = inp * hold_in + fee + b * np.minimum(allow, caps.max_output_tokens)
            draw.max_hold = np.where(ran & np.isfinite(hold), hold, 0.0)
        draw.clamped |= np.bincount(ko, weights=clamped_att[keep], minlength=n) > 0
        if self.latency is not None:
            lat = self.latency.sample(rng, int(keep.sum()))
            draw.time = np.asarray(np.bincount(ko, weights=lat, minlength=n), dtype=np.float64)
        draw.outcome = np.where(exh, EXHAUSTED, 0).astype(np.int8)
        draw.denied = np.where(pre >= 0, pre, run_denied).astype(np.int8)
        draw.outcome[draw.denied >= 0] = DENIED
        return draw

    # -- transform -----------------------------------------------------------------------
    def cf(self, dim: int, lat: Lattice, env: FloatArray) -> tuple[ComplexArray, ComplexArray]:
        """Sub-probability transforms of one visit's ``dim`` for success and exhaustion."""
        rt = self.retry
        r, f, q, qx = rt.r, rt.f, rt.q_ok, rt.q_exh
        ones = np.ones(lat.m, dtype=np.complex128)
        if dim in (self.count_dim, RETRIES):
            off = 1 if dim == self.count_dim else 0
            ok = sum(q[k] * lat.power(k + off) for k in range(r + 1))
            return np.asarray(ok, dtype=np.complex128), qx * lat.power(r + off)
        if dim == COST and self.flat is not None:
            x = self.flat
            psi = lat.cf(x.lattice_pmf(lat.h, lat.m))
            psi_f = lat.cf(x.lattice_pmf(lat.h, lat.m, scale=f)) if f > 0 else ones
            ok = sum(q[k] * psi * psi_f**k for k in range(r + 1))
            return np.asarray(ok, dtype=np.complex128), qx * psi_f ** (r + 1)
        if (dim == COST and self.card is not None) or (dim == TOKENS and self.tokens):
            assert self.inp is not None and self.out is not None
            if dim == COST:
                assert self.card is not None
                a, _, b, fee = self._levels()
                segs = self.card.segments
            else:
                a, b, fee = np.ones(1), np.ones(1), np.zeros(1)
                segs = [(-math.inf, math.inf)]
            c = float(self.inp.shift(env)[0])
            c_o = float(self.out.shift(env)[0])
            ok = np.zeros(lat.m, dtype=np.complex128)
            ex = np.zeros(lat.m, dtype=np.complex128)
            for k, (lo, hi) in enumerate(segs):

                def s_cf(scale: float, k: int = k, lo: float = lo, hi: float = hi) -> ComplexArray:
                    assert self.inp is not None
                    pmf = self.inp.base.lattice_pmf(
                        lat.h, lat.m, scale=scale, shift=scale * c, lo=lo - c, hi=hi - c
                    )
                    return lat.cf(pmf)

                base = self.out.base
                psi = lat.cf(base.lattice_pmf(lat.h, lat.m, scale=b[k], shift=b[k] * c_o + fee[k]))
                psi_f = (
                    lat.cf(
                        base.lattice_pmf(
                            lat.h, lat.m, scale=f * b[k], shift=f * (b[k] * c_o + fee[k])
                        )
                    )
                    if f > 0
                    else ones
                )
                for jj in range(r + 1):
                    ok += q[jj] * s_cf((1 + f * jj) * a[k]) * psi * psi_f**jj
                if qx > 0:
                    ex += qx * s_cf(f * (r + 1) * a[k]) * psi_f ** (r + 1)
            return ok, ex
        return (1.0 - qx) * ones, qx * ones

    # -- guaranteed bounds ---------------------------------------------------------------
    def worst_attempt(
        self, max_input: float, max_output: float, max_cost: float, env_upper: FloatArray
    ) -> float:
        """The most one attempt can cost under per-call caps (``inf`` if unbounded)."""
        if self.flat is not None:
            top = self.flat.upper()
            return top if self.tool else min(top, max_cost)
        if self.card is None or self.inp is None or self.out is None:
            return 0.0
        i_max = min(max_input, self.inp.upper(env_upper))
        o_max = min(max_output, self.out.upper(env_upper))
        if not (math.isfinite(i_max) and math.isfinite(o_max)):
            return max_cost
        worst = 0.0
        for (lo, _), lv in zip(self.card.segments, self.card.levels, strict=True):
            if i_max > lo:
                worst = max(worst, i_max * lv.hold_input + o_max * lv.output + lv.per_request)
        return min(worst, max_cost)


__all__ = ["CallKernel"]
