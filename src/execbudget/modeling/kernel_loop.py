"""
An agent loop: one model call (with retries) and ``n_tools`` tool calls per step.

Step ``k`` sends ``min(c0 + (k-1)·Δ, cmax)`` input tokens: the context starts at ``c0`` and
grows by ``Δ`` per step (both drawn once per loop), so input cost is quadratic in the
number of steps — the reason step caps and context ceilings matter so much. With prompt
caching, step ``k`` reads the previous step's input from the cache (cache-read rate) and
writes the ``Δ`` new tokens (cache-write rate); once the context is clipped at ``cmax``
the window slides, the prefix changes, and every step pays full input again.

The number of steps is geometric: after each step the loop continues with ``continue_p``
(drawn per loop from the regimes: a normal one and an optional "stuck" one), up to
``max_steps``. A step whose call exhausts its retries ends the loop as exhausted.

Exact moments condition on ``(c0, Δ)`` through moment-matched atoms and sum over the step
at which the loop ends; Monte Carlo flattens steps and attempts into arrays; the
transform multiplies step transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._arrays import ComplexArray, FloatArray, IntArray
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
    STEPS,
    TOKENS,
    TOOL_CALLS,
    ZERO,
    CQty,
    CRetry,
    Lattice,
    VisitDraw,
    VisitMoments,
)
from .distributions import AnyDist, Atoms, Fixed
from .rates import RateCard
from .simcaps import SimCaps, sequence

#: Steps past which the probability of still running is below this are ignored.
_TAIL = 1e-13
_MAX_K = 20_000
#: Work per chunk in the exact engine (points × steps).
_CHUNK = 1_500_000
_ZERO_COST = Fixed(value=0.0)


@dataclass(frozen=True)
class LoopKernel:
    """A compiled ``agent_loop`` node."""

    name: str
    card: RateCard | None = None
    flat: AnyDist | None = None
    c0: CQty | None = None
    growth: CQty = ZERO
    cmax: float = math.inf
    out: CQty | None = None
    regimes: tuple[tuple[float, float], ...] = ((1.0, 0.5),)
    max_steps: int | None = None
    max_fail: bool = False
    cache: bool = False
    n_tools: int = 0
    tool_cost: AnyDist = _ZERO_COST
    retry: CRetry = NO_RETRY
    latency: AnyDist | None = None
    tool_latency: AnyDist | None = None
    inner_bins: int = 24
    #: Coarser atoms for the transform, whose cost grows with every inner point.
    transform_bins: int = 4

    @property
    def tokens(self) -> bool:
        return self.c0 is not None and self.out is not None

    @property
    def priced(self) -> bool:
        return self.flat is None and self.card is not None and self.tokens

    def horizon(self) -> int:
        """How many steps the exact engine and the transform look at."""
        e = self.retry.q_exh
        worst = max(c for _, c in self.regimes) * (1 - e)
        k = 1 if worst <= 0 else 1 + math.ceil(math.log(_TAIL) / math.log(worst))
        k = min(k, _MAX_K)
        return k if self.max_steps is None else min(k, self.max_steps)

    def endings(self) -> tuple[FloatArray, FloatArray, float]:
        """P(end at step k successfully), P(end at k exhausted), P(stopped by max_steps)."""
        k_max = self.horizon()
        e = self.retry.q_exh
        k = np.arange(1, k_max + 1)
        ok = np.zeros(k_max)
        ex = np.zeros(k_max)
        at_max = 0.0
        hits_max = self.max_steps is not None and k_max == self.max_steps
        for w, c in self.regimes:
            reach = ((1 - e) * c) ** (k - 1)
            stop = reach * (1 - e) * (1 - c)
            if hits_max:
                at_max += w * reach[-1] * (1 - e)
                stop[-1] = 0.0
            ok += w * stop
            ex += w * reach * e
        return ok, ex, at_max

    # -- per-step quantities -------------------------------------------------------------
    def _steps(
        self, c0: FloatArray, g: FloatArray, k: IntArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Input tokens, cache-read tokens and new tokens of step ``k`` (broadcast)."""
        raw = c0 + (k - 1) * g
        clipped = raw > self.cmax
        inp = np.minimum(raw, self.cmax)
        if self.cache:
            read = np.where((k >= 2) & ~clipped, c0 + (k - 2) * g, 0.0)
        else:
            read = np.zeros_like(inp)
        return inp, read, inp - read

    def _rates(self, inp: FloatArray) -> tuple[FloatArray, ...]:
        """Per-step rates: cache read, write (or input), output, fee, hold input."""
        assert self.card is not None
        c = self.card
        lvl = c.level_of(inp)
        write = c.column("cache_write") if self.cache else c.column("input")
        hold = np.array([lv.hold_input for lv in c.levels])
        return (
            c.column("cache_read")[lvl],
            write[lvl],
            c.column("output")[lvl],
            c.column("per_request")[lvl],
            hold[lvl],
        )

    # -- exact moments -------------------------------------------------------------------
    def moments(self, env: FloatArray) -> VisitMoments:
        n = env.shape[0]
        dep = any(q is not None and q.env_dependent for q in (self.c0, self.growth, self.out))
        if not dep and n > 1:
            one = self.moments(env[:1])
            return VisitMoments(
                np.repeat(one.p_ok, n),
                np.repeat(one.m_ok, n, axis=1),
                np.repeat(one.s_ok, n, axis=1),
                np.repeat(one.m_exh, n, axis=1),
                np.repeat(one.s_exh, n, axis=1),
            )
        vm = VisitMoments.zeros(n)
        endok, endex, at_max = self.endings()
        k_max = endok.shape[0]
        if self.max_fail:
            p_ok, p_ex = float(endok.sum()), float(endex.sum()) + at_max
        else:
            p_ok, p_ex = float(endok.sum()) + at_max, float(endex.sum())
        vm.p_ok[:] = p_ok / max(p_ok + p_ex, 1e-300)
        rt = self.retry
        r, f = rt.r, rt.f
        j = np.arange(r + 1, dtype=np.float64)
        e1, e2, ej = rt.ok_moment(1 + f * j), rt.ok_moment((1 + f * j) ** 2), rt.ok_moment(j)
        ones = np.ones((1, k_max))
        counters = {
            STEPS: (1.0, 1.0, 1.0, 0.0),
            CALLS: (rt.ok_moment(j + 1), rt.ok_moment((j + 1) ** 2), r + 1.0, 0.0),
            RETRIES: (ej, rt.ok_moment(j**2), float(r), 0.0),
            TOOL_CALLS: (float(self.n_tools), self.n_tools**2, 0.0, 0.0),
        }
        for dim, (m1, m2, mx, vx) in counters.items():
            res = self._accumulate(
                m1 * ones, (m2 - m1 * m1) * ones, mx * ones, vx * ones, endok, endex, at_max
            )
            self._store(vm, dim, tuple(np.repeat(x, n) for x in res), p_ok, p_ex)
        mu_t, var_t = self.tool_cost.mean() * self.n_tools, self.tool_cost.variance() * self.n_tools
        if self.flat is not None:
            mu, var = self.flat.mean(), self.flat.variance()
            m_ok = (e1 * mu + mu_t) * ones
            v_ok = ((e2 - e1 * e1) * mu * mu + (1 + f * f * ej) * var + var_t) * ones
            res = self._accumulate(
                m_ok,
                v_ok,
                f * (r + 1) * mu * ones,
                f * f * (r + 1) * var * ones,
                endok,
                endex,
                at_max,
            )
            self._store(vm, COST, tuple(np.repeat(x, n) for x in res), p_ok, p_ex)
        if not self.tokens:
            return vm
        assert self.c0 is not None and self.out is not None
        a0 = _inner(self.c0.base, self.inner_bins)
        ag = _inner(self.growth.base, self.inner_bins)
        w_in = np.outer(a0.weights, ag.weights).ravel()
        per_env = w_in.shape[0]
        rows = max(1, _CHUNK // max(per_env * k_max, 1))
        k = np.arange(1, k_max + 1)
        for lo in range(0, n, rows):
            sl = slice(lo, min(lo + rows, n))
            e = env[sl]
            c0 = (a0.points[None, :, None] + self.c0.shift(e)[:, None, None]) + 0 * ag.points
            g = ag.points[None, None, :] + self.growth.shift(e)[:, None, None] + 0 * c0
            c0, g = c0.reshape(-1, 1), g.reshape(-1, 1)
            mu_o = np.repeat(self.out.mean(e), per_env)[:, None]
            var_o = self.out.variance()
            inp, read, new = self._steps(c0, g, k[None, :])
            terms = [(TOKENS, inp, np.ones_like(inp), np.zeros_like(inp), 0.0, 0.0)]
            if self.priced:
                cr, cw, b, fee, _ = self._rates(inp)
                terms.append((COST, read * cr + new * cw, b, fee, mu_t, var_t))
            for dim, u, b, fee, tm, tv in terms:
                att = u + b * mu_o + fee
                sig2 = b * b * var_o
                res = self._accumulate(
                    e1 * att + tm,
                    (e2 - e1 * e1) * att**2 + (1 + f * f * ej) * sig2 + tv,
                    f * (r + 1) * att,
                    f * f * (r + 1) * sig2,
                    endok,
                    endex,
                    at_max,
                )
                mixed = tuple(x.reshape(-1, per_env) @ w_in for x in res)
                self._store(vm, dim, mixed, p_ok, p_ex, where=sl)
        return vm

    def _accumulate(
        self,
        m_ok: FloatArray,
        v_ok: FloatArray,
        m_ex: FloatArray,
        v_ex: FloatArray,
        endok: FloatArray,
        endex: FloatArray,
        at_max: float,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Unconditional ``E[X; ok], E[X²; ok], E[X; exh], E[X²; exh]`` per point."""
        cm = np.cumsum(m_ok, axis=1)
        cv = np.cumsum(v_ok, axis=1)
        s_ok = cv + cm**2
        prev_m = cm - m_ok
        prev_v = cv - v_ok
        ex_m = prev_m + m_ex
        ex_s = prev_v + v_ex + ex_m**2
        e_ok, q_ok = cm @ endok, s_ok @ endok
        e_ex, q_ex = ex_m @ endex, ex_s @ endex
        if at_max:
            if self.max_fail:
                e_ex = e_ex + at_max * cm[:, -1]
                q_ex = q_ex + at_max * s_ok[:, -1]
            else:
                e_ok = e_ok + at_max * cm[:, -1]
                q_ok = q_ok + at_max * s_ok[:, -1]
        return e_ok, q_ok, e_ex, q_ex

    @staticmethod
    def _store(
        vm: VisitMoments,
        dim: int,
        res: tuple[FloatArray, ...],
        p_ok: float,
        p_ex: float,
        where: slice | None = None,
    ) -> None:
        """Store unconditional sums ``res`` as moments conditional on the outcome."""
        e_ok, q_ok, e_ex, q_ex = res
        sl = slice(None) if where is None else where
        vm.m_ok[dim, sl] = e_ok / p_ok if p_ok > 0 else 0.0
        vm.s_ok[dim, sl] = q_ok / p_ok if p_ok > 0 else 0.0
        vm.m_exh[dim, sl] = e_ex / p_ex if p_ex > 0 else 0.0
        vm.s_exh[dim, sl] = q_ex / p_ex if p_ex > 0 else 0.0

    # -- Monte Carlo ---------------------------------------------------------------------
    def sample(
        self,
        rng: np.random.Generator,
        env: FloatArray,
        caps: SimCaps | None = None,
        remaining: FloatArray | None = None,
    ) -> VisitDraw:
        n = env.shape[0]
        draw = VisitDraw.empty(n)
        if n == 0:
            return draw
        rt = self.retry
        if len(self.regimes) == 1:
            cont: FloatArray = np.full(n, self.regimes[0][1])
        else:
            w = np.array([x for x, _ in self.regimes])
            cs = np.array([c for _, c in self.regimes])
            cont = cs[rng.choice(len(cs), size=n, p=w / w.sum())]
        length = rng.geometric(1.0 - cont)
        e = rt.q_exh
        first_exh = rng.geometric(e, n) if e > 0 else np.full(n, np.iinfo(np.int64).max)
        cap = self.max_steps if self.max_steps is not None else np.iinfo(np.int64).max
        natural = np.minimum(length, cap)
        exh = first_exh <= natural
        at_max = ~exh & (length > cap)
        steps = np.where(exh, first_exh, natural).astype(np.int64)
        total = int(steps.sum())
        owner = np.repeat(np.arange(n), steps)
        k = np.arange(total) - (np.cumsum(steps) - steps)[owner] + 1
        last = k == steps[owner]
        step_exh = last & exh[owner]
        # failures per step: conditioned on success, except the exhausting step
        q = rt.q_ok / max(1.0 - e, 1e-300)
        j = np.searchsorted(np.cumsum(q), rng.random(total) * q.sum(), side="right")
        j = np.minimum(j, rt.r)
        j = np.where(step_exh, rt.r + 1, j)
        attempts = j + ~step_exh
        inp: FloatArray | None = None
        if self.tokens:
            assert self.c0 is not None
            c0 = self.c0.sample(rng, env)
            g = self.growth.sample(rng, env)
            inp, read, new = self._steps(c0[owner], g[owner], k)
        # per-call caps act per step
        pre = np.full(total, -1, dtype=np.int8)
        allow = np.full(total, math.inf)
        if caps is not None:
            allow[:] = caps.max_output_tokens
            if inp is not None:
                pre[inp > caps.max_input_tokens] = DENY_INPUT
            if self.priced:
                assert inp is not None
                _, _, b, fee, hold = self._rates(inp)
                allow = caps.allowance(inp * hold + fee, b)
                pre[(pre < 0) & (allow < caps.min_output_tokens)] = DENY_CALL_COST
        cut = np.full(n, total)
        if np.any(pre >= 0):
            bad = np.flatnonzero(pre >= 0)
            np.minimum.at(cut, owner[bad], bad)
        alive = np.arange(total) < cut[owner]
        # attempts
        a_owner = np.repeat(np.arange(total), np.where(alive, attempts, 0))
        a_total = a_owner.shape[0]
        a_first = np.cumsum(np.where(alive, attempts, 0)) - np.where(alive, attempts, 0)
        a_pos = np.arange(a_total) - a_first[a_owner]
        a_failed = ~((a_pos == attempts[a_owner] - 1) & ~step_exh[a_owner])
        weight = np.where(a_failed, rt.f, 1.0)
        out = self.out.sample(rng, env[owner[a_owner]]) if self.out is not None else None
        clamped_att = np.zeros(a_total, dtype=bool)
        if out is not None and caps is not None:
            lim = allow[a_owner]
            clamped_att = out > lim
            out = np.minimum(out, lim)
        use = np.zeros((total, N_DIMS))
        use[:, STEPS] = alive
        use[:, CALLS] = np.where(alive, attempts, 0)
        use[:, RETRIES] = np.where(alive, attempts - 1, 0)
        ok_step = alive & ~step_exh
        use[:, TOOL_CALLS] = ok_step * self.n_tools
        tools = np.zeros(total)
        if self.n_tools:
            draws = self.tool_cost.sample(rng, int(ok_step.sum()) * self.n_tools)
            tools[ok_step] = draws.reshape(-1, self.n_tools).sum(axis=1)
        if self.flat is not None:
            att_cost = weight * self.flat.sample(rng, a_total)
            use[:, COST] = np.bincount(a_owner, weights=att_cost, minlength=total) + tools
        elif self.priced:
            assert inp is not None and out is not None
            cr, cw, b, fee, hold = self._rates(inp)
            u = read * cr + new * cw + fee
            att_cost = weight * (u[a_owner] + b[a_owner] * out)
            use[:, COST] = np.bincount(a_owner, weights=att_cost, minlength=total) + tools
        if self.tokens:
            assert inp is not None and out is not None
            att_tok = weight * (inp[a_owner] + out)
            use[:, TOKENS] = np.bincount(a_owner, weights=att_tok, minlength=total)
        keep = alive.copy()
        run_denied = np.full(n, -1, dtype=np.int8)
        if remaining is not None and caps is not None and caps.has_run_limits:
            need = use.copy()
            if self.priced:
                assert inp is not None
                need[:, COST] = inp * hold + fee + b * caps.min_output_tokens + tools
                need[:, TOKENS] = inp + caps.min_output_tokens
            sub = np.flatnonzero(alive)
            kept, used, run_denied, clamped_run = sequence(
                owner[sub], use[sub], need[sub], remaining
            )
            keep[:] = False
            keep[sub[kept]] = True
            use[sub] = used
            draw.clamped |= clamped_run
        ko = owner[keep]
        for dim in range(N_DIMS):
            draw.use[:, dim] = np.bincount(ko, weights=use[keep, dim], minlength=n)
        if inp is not None:
            np.maximum.at(draw.max_in, ko, inp[keep])
        if out is not None:
            a_keep = keep[a_owner]
            np.maximum.at(draw.max_out, owner[a_owner[a_keep]], out[a_keep] * (weight[a_keep] > 0))
            draw.clamped |= (
                np.bincount(owner[a_owner[a_keep]], weights=clamped_att[a_keep], minlength=n) > 0
            )
        if caps is not None and self.priced:
            assert inp is not None
            held = inp * hold + fee + b * np.minimum(allow, caps.max_output_tokens)
            np.maximum.at(draw.max_hold, ko, np.where(np.isfinite(held[keep]), held[keep], 0.0))
        if self.latency is not None or self.tool_latency is not None:
            t = np.zeros(total)
            if self.latency is not None:
                t += np.bincount(
                    a_owner, weights=self.latency.sample(rng, a_total), minlength=total
                )
            if self.tool_latency is not None and self.n_tools:
                lat = self.tool_latency.sample(rng, total * self.n_tools).reshape(total, -1).sum(1)
                t += lat * ok_step
            draw.time = np.asarray(np.bincount(ko, weights=t[keep], minlength=n), dtype=np.float64)
        draw.outcome = np.where(exh | (at_max & self.max_fail), EXHAUSTED, 0).astype(np.int8)
        cut_visit = cut < (np.cumsum(steps))
        first_pre = np.where(cut_visit, pre[np.minimum(cut, total - 1)], -1).astype(np.int8)
        draw.denied = np.where(first_pre >= 0, first_pre, run_denied).astype(np.int8)
        draw.outcome[draw.denied >= 0] = DENIED
        return draw

    # -- transform -----------------------------------------------------------------------
    def cf(self, dim: int, lat: Lattice, env: FloatArray) -> tuple[ComplexArray, ComplexArray]:
        """Sub-probability transforms of one loop visit (inner context atoms mixed)."""
        rt = self.retry
        r, f, q, qx = rt.r, rt.f, rt.q_ok, rt.q_exh
        k_max = self.horizon()
        ones = np.ones(lat.m, dtype=np.complex128)
        if dim in (STEPS, CALLS, RETRIES, TOOL_CALLS) or (dim == COST and self.flat is not None):
            if dim == STEPS:
                s_ok, s_ex = (1 - qx) * lat.power(1), qx * lat.power(1)
            elif dim == CALLS:
                s_ok = np.asarray(sum(q[i] * lat.power(i + 1) for i in range(r + 1)))
                s_ex = qx * lat.power(r + 1)
            elif dim == RETRIES:
                s_ok = np.asarray(sum(q[i] * lat.power(i) for i in range(r + 1)))
                s_ex = qx * lat.power(r)
            elif dim == TOOL_CALLS:
                s_ok, s_ex = (1 - qx) * lat.power(self.n_tools), qx * ones
            else:
                assert self.flat is not None
                x = lat.cf(self.flat.lattice_pmf(lat.h, lat.m))
                xf = lat.cf(self.flat.lattice_pmf(lat.h, lat.m, scale=f)) if f > 0 else ones
                tool = lat.cf(self.tool_cost.lattice_pmf(lat.h, lat.m)) ** self.n_tools
                s_ok = np.asarray(sum(q[i] * x * xf**i for i in range(r + 1))) * tool
                s_ex = qx * xf ** (r + 1)
            return self._chain(lambda _k: s_ok, lambda _k: s_ex, k_max, lat)
        if dim not in (COST, TOKENS) or not self.tokens or (dim == COST and not self.priced):
            return self._chain(lambda _k: (1 - qx) * ones, lambda _k: qx * ones, k_max, lat)
        assert self.c0 is not None and self.out is not None
        a0 = _inner(self.c0.base, self.transform_bins, tails=False)
        ag = _inner(self.growth.base, self.transform_bins, tails=False)
        c_o = float(self.out.shift(env)[0])
        ok_mix = np.zeros(lat.m, dtype=np.complex128)
        ex_mix = np.zeros(lat.m, dtype=np.complex128)
        tool = (
            lat.cf(self.tool_cost.lattice_pmf(lat.h, lat.m)) ** self.n_tools
            if dim == COST and self.n_tools
            else ones
        )
        psi_cache: dict[tuple[float, float], tuple[ComplexArray, ComplexArray]] = {}

        def psi(b: float, fee: float) -> tuple[ComplexArray, ComplexArray]:
            key = (b, fee)
            if key not in psi_cache:
                assert self.out is not None
                base = self.out.base
                full = lat.cf(base.lattice_pmf(lat.h, lat.m, scale=b, shift=b * c_o + fee))
                part = (
                    lat.cf(base.lattice_pmf(lat.h, lat.m, scale=f * b, shift=f * (b * c_o + fee)))
                    if f > 0
                    else ones
                )
                psi_cache[key] = (full, part)
            return psi_cache[key]

        k = np.arange(1, k_max + 1)
        for p0, w0 in zip(a0.points, a0.weights, strict=True):
            for pg, wg in zip(ag.points, ag.weights, strict=True):
                c0 = p0 + float(self.c0.shift(env)[0])
                g = pg + float(self.growth.shift(env)[0])
                inp, read, new = self._steps(np.array([c0]), np.array([g]), k)
                if dim == COST:
                    cr, cw, b, fee, _ = self._rates(inp)
                    u = read * cr + new * cw
                else:
                    u, b, fee = inp, np.ones(k_max), np.zeros(k_max)

                def step_ok(
                    i: int, u: FloatArray = u, b: FloatArray = b, fee: FloatArray = fee
                ) -> ComplexArray:
                    full, part = psi(float(b[i]), float(fee[i]))
                    acc = sum(
                        q[jj] * lat.point((1 + f * jj) * u[i]) * full * part**jj
                        for jj in range(r + 1)
                    )
                    return np.asarray(acc) * tool

                def step_ex(
                    i: int, u: FloatArray = u, b: FloatArray = b, fee: FloatArray = fee
                ) -> ComplexArray:
                    _, part = psi(float(b[i]), float(fee[i]))
                    return qx * lat.point(f * (r + 1) * u[i]) * part ** (r + 1)

                ok, ex = self._chain(step_ok, step_ex, k_max, lat)
                ok_mix += w0 * wg * ok
                ex_mix += w0 * wg * ex
        return ok_mix, ex_mix

    def _chain(
        self,
        step_ok: Callable[[int], ComplexArray],
        step_ex: Callable[[int], ComplexArray],
        k_max: int,
        lat: Lattice,
    ) -> tuple[ComplexArray, ComplexArray]:
        """Sum over the step the loop ends at, for each continuation regime."""
        hits_max = self.max_steps is not None and k_max == self.max_steps
        ok = np.zeros(lat.m, dtype=np.complex128)
        ex = np.zeros(lat.m, dtype=np.complex128)
        runs = [np.ones(lat.m, dtype=np.complex128) for _ in self.regimes]
        for i in range(k_max):
            live = [g for g, (w, c) in enumerate(self.regimes) if w * c**i >= 1e-300]
            if not live:
                break
            s_ok, s_ex = step_ok(i), step_ex(i)
            for g in live:
                w, c = self.regimes[g]
                reach = w * c**i
                ex += reach * runs[g] * s_ex
                runs[g] = runs[g] * s_ok
                if hits_max and i == k_max - 1:
                    if self.max_fail:
                        ex += reach * runs[g]
                    else:
                        ok += reach * runs[g]
                else:
                    ok += reach * (1 - c) * runs[g]
        return ok, ex

    # -- guaranteed bounds ---------------------------------------------------------------
    def worst_attempt(
        self,
        max_input: float,
        max_output: float,
        max_cost: float,
        env_upper: FloatArray,
        steps: float,
    ) -> float:
        """The most one model call of the loop can cost, within ``steps`` steps."""
        if self.flat is not None:
            return min(self.flat.upper(), max_cost)
        if not self.priced:
            return 0.0
        assert self.c0 is not None and self.out is not None and self.card is not None
        grown = self.c0.upper(env_upper) + max(steps - 1, 0) * self.growth.upper(env_upper)
        i_max = min(max_input, self.cmax, grown)
        o_max = min(max_output, self.out.upper(env_upper))
        if not (math.isfinite(i_max) and math.isfinite(o_max)):
            return max_cost
        worst = 0.0
        for (lo, _), lv in zip(self.card.segments, self.card.levels, strict=True):
            if i_max > lo:
                worst = max(worst, i_max * lv.hold_input + o_max * lv.output + lv.per_request)
        return min(worst, max_cost)


def _inner(dist: AnyDist, bins: int, *, tails: bool = True) -> Atoms:
    return Atoms.point(dist.value) if isinstance(dist, Fixed) else dist.atoms(bins, tails=tails)


__all__ = ["LoopKernel"]
