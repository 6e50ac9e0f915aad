"""
The distributions of the cost model: token counts, money, counts of items.

Every distribution answers the questions of all three engines, so the engines never
special-case a family:

* ``sample`` for Monte Carlo;
* ``mean`` / ``second_moment`` / ``partial_moments`` (over an interval, for price tiers) for
  the exact engine;
* ``atoms`` — a small discrete distribution that reproduces the first two moments of the
  original **within every bin**. Any quantity that is (piecewise) quadratic in the variable
  therefore has the *same* mean and variance under the atoms as under the original, which
  is what the Markov engine needs: cost is linear in tokens, and variance is quadratic;
* ``lattice_pmf`` — the mass on a money or count lattice, for the transform (FFT) engine.

Families: ``fixed``, ``lognormal`` (from a median and a p99, the way people describe
token sizes), ``negbin`` (overdispersed counts, mean + dispersion), ``poisson`` and
``empirical`` (samples from a trace). A plain number in a spec is a ``fixed`` value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ._arrays import FloatArray
from ._deps import nbinom, ndtr, ndtri, poisson

ArrayLike = FloatArray | float
Moments3 = tuple[FloatArray, FloatArray, FloatArray]

#: z-score of the 99th percentile of a standard normal (p99 → sigma for lognormals).
Z99 = float(ndtri(0.99))

#: Tail mass below which a count distribution's support is cut (the rest is renormalised).
_COUNT_TAIL = 1e-14

#: Extra bin edges (in standard deviations) that keep tail bins of a lognormal narrow.
_TAIL_Z = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0)

#: Empirical samples with at most this many distinct values are used exactly as atoms.
_EXACT_EMPIRICAL = 512


@dataclass(frozen=True, slots=True)
class Atoms:
    """A discrete distribution: ``points`` with probabilities ``weights`` (summing to 1)."""

    points: FloatArray
    weights: FloatArray

    def mean(self) -> float:
        return float(self.points @ self.weights)

    def second_moment(self) -> float:
        return float((self.points**2) @ self.weights)

    @staticmethod
    def point(value: float) -> Atoms:
        return Atoms(np.array([float(value)]), np.array([1.0]))


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- interface (overridden) -------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError

    def second_moment(self) -> float:
        raise NotImplementedError

    def cdf(self, x: FloatArray) -> FloatArray:
        """``P(X <= x)``."""
        raise NotImplementedError

    def partial_moments(self, lo: ArrayLike, hi: ArrayLike) -> Moments3:
        """``(P, E[X; A], E[X²; A])`` over ``A = {lo < X <= hi}`` (arrays broadcast)."""
        support = self.discrete_support()
        assert support is not None, "continuous distributions override partial_moments"
        pts = support.points
        c = [np.concatenate([[0.0], np.cumsum(support.weights * pts**k)]) for k in range(3)]
        i_lo = np.searchsorted(pts, _as_array(lo), side="right")
        i_hi = np.searchsorted(pts, _as_array(hi), side="right")
        i_hi = np.maximum(i_hi, i_lo)
        w, m1, m2 = (ck[i_hi] - ck[i_lo] for ck in c)
        return w, m1, m2

    def atoms(self, bins: int = 32, edges: tuple[float, ...] = (), *, tails: bool = True) -> Atoms:
        """A discrete stand-in that matches the mean and variance inside every bin
        (``tails``: also narrow bins far in the tails, where nonlinear costs bite)."""
        raise NotImplementedError

    def quantile(self, q: float) -> float:
        raise NotImplementedError

    def upper(self) -> float:
        """The largest value the distribution can take (``inf`` if unbounded)."""
        raise NotImplementedError

    @property
    def integer(self) -> bool:
        """True when every value is a whole number (needed for counts)."""
        return False

    def discrete_support(self) -> Atoms | None:
        """The exact point masses for discrete distributions, ``None`` for continuous ones."""
        return None

    # -- shared -------------------------------------------------------------------------
    def variance(self) -> float:
        return max(self.second_moment() - self.mean() ** 2, 0.0)

    def describe(self) -> str:
        return self.__class__.__name__.lower()

    def lattice_pmf(
        self,
        h: float,
        m: int,
        *,
        scale: float = 1.0,
        shift: float = 0.0,
        lo: float = -math.inf,
        hi: float = math.inf,
    ) -> FloatArray:
        """
        The mass of ``scale·X + shift`` restricted to ``lo < X <= hi`` on the lattice
        ``k·h, k = 0..m-1``.

        Every value is split linearly between its two neighbouring lattice points, which
        keeps the mean exact: discrete values directly, continuous ones cell by cell through
        the cell's mass and first partial moment (local moment matching). Mass past the end
        of the lattice goes to the last point so nothing is lost silently; the transform
        engine checks that it is negligible.
        """
        out = np.zeros(m)
        support = self.discrete_support()
        if scale == 0.0:
            p, _, _ = self.partial_moments(lo, hi)
            _spread(out, np.array([shift / h]), np.atleast_1d(p))
            return out
        if support is not None:
            keep = (support.points > lo) & (support.points <= hi)
            values = (scale * support.points[keep] + shift) / h
            _spread(out, values, support.weights[keep])
            return out
        x = np.clip((np.arange(m) * h - shift) / scale, lo, hi)
        edges = np.concatenate([[lo], x, [hi]])
        w, m1, _ = self.partial_moments(edges[:-1], edges[1:])
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = np.where(w > 0, (scale * m1 / np.where(w > 0, w, 1.0) + shift) / h, 0.0)
        _spread(out, pos, w)
        return np.maximum(out, 0.0)


def _spread(out: FloatArray, values: FloatArray, weights: FloatArray) -> None:
    """Add point masses at fractional lattice positions, split linearly (mean-preserving)."""
    m = out.shape[0]
    values = np.clip(values, 0.0, m - 1)
    lower = np.floor(values).astype(np.int64)
    frac = values - lower
    upper = np.minimum(lower + 1, m - 1)
    np.add.at(out, lower, weights * (1.0 - frac))
    np.add.at(out, upper, weights * frac)


def _two_point(lo: FloatArray, mean: FloatArray, var: FloatArray, weight: FloatArray) -> Atoms:
    """
    Two atoms per bin that match the bin's probability, mean and variance.

    Symmetric points ``mean ± sd`` when both fall inside the bin; otherwise one point is put
    on the bin's lower edge and the other placed so the variance still matches (this
    happens only in long tail bins).
    """
    sd = np.sqrt(np.maximum(var, 0.0))
    sym = (mean - sd >= lo) & (sd > 0)
    a = np.where(sym, mean - sd, lo)
    gap = np.maximum(mean - a, 1e-300)
    b = np.where(sym, mean + sd, mean + var / gap)
    pb = np.where(sym, 0.5, np.clip((mean - a) / np.maximum(b - a, 1e-300), 0.0, 1.0))
    degenerate = sd <= 0
    a = np.where(degenerate, mean, a)
    b = np.where(degenerate, mean, b)
    pb = np.where(degenerate, 0.0, pb)
    points = np.concatenate([a, b])
    weights = np.concatenate([weight * (1.0 - pb), weight * pb])
    keep = weights > 0
    return Atoms(points[keep], weights[keep] / weights[keep].sum())


def _phi_diff(a: FloatArray, b: FloatArray) -> FloatArray:
    """``Φ(b) − Φ(a)`` computed without cancellation in the upper tail."""
    upper = ndtr(-a) - ndtr(-b)
    lower = ndtr(b) - ndtr(a)
    return np.asarray(np.where(a > 0, upper, lower), dtype=np.float64)


def _as_array(x: FloatArray | float) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


class Fixed(_Dist):
    """A constant: ``3``, ``0.004`` or ``{dist: fixed, value: 3}``."""

    dist: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.full(n, self.value)

    def mean(self) -> float:
        return self.value

    def second_moment(self) -> float:
        return self.value**2

    def cdf(self, x: FloatArray) -> FloatArray:
        return (_as_array(x) >= self.value).astype(np.float64)

    def atoms(self, bins: int = 32, edges: tuple[float, ...] = (), *, tails: bool = True) -> Atoms:
        return Atoms.point(self.value)

    def discrete_support(self) -> Atoms:
        return Atoms.point(self.value)

    def quantile(self, q: float) -> float:
        return self.value

    def upper(self) -> float:
        return self.value

    @property
    def integer(self) -> bool:
        return float(self.value).is_integer()

    def describe(self) -> str:
        return f"{self.value:g}"


class LogNormal(_Dist):
    """
    A lognormal, given the way people describe sizes: a ``median`` and a ``p99`` (or an
    explicit ``sigma``), optionally clipped at ``max`` (a context window, say).

    ``sigma = ln(p99 / median) / 2.326``.
    """

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    p99: float | None = Field(default=None, gt=0)
    sigma: float | None = Field(default=None, gt=0, le=5)
    max: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _shape(self) -> LogNormal:
        if (self.p99 is None) == (self.sigma is None):
            raise ValueError("give exactly one of p99 or sigma")
        if self.p99 is not None and self.p99 <= self.median:
            raise ValueError(f"p99 ({self.p99:g}) must be above the median ({self.median:g})")
        if self.max is not None and self.max <= self.median:
            raise ValueError(f"max ({self.max:g}) must be above the median ({self.median:g})")
        return self

    @classmethod
    def from_median_p99(cls, median: float, p99: float, *, max: float | None = None) -> LogNormal:
        return cls(median=median, p99=p99, max=max)

    @property
    def mu(self) -> float:
        return math.log(self.median)

    @property
    def s(self) -> float:
        if self.sigma is not None:
            return self.sigma
        assert self.p99 is not None
        return math.log(self.p99 / self.median) / Z99

    def _z(self, x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            return (np.log(np.maximum(x, 0.0)) - self.mu) / self.s

    def _raw_partial(self, za: FloatArray, zb: FloatArray, k: int) -> FloatArray:
        """E[X^k; za < Z <= zb] of the unclipped lognormal."""
        if k == 0:
            return _phi_diff(za, zb)
        return math.exp(k * self.mu + 0.5 * (k * self.s) ** 2) * _phi_diff(
            za - k * self.s, zb - k * self.s
        )

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        x = np.exp(self.mu + self.s * rng.standard_normal(n))
        return x if self.max is None else np.minimum(x, self.max)

    def partial_moments(self, lo: ArrayLike, hi: ArrayLike) -> Moments3:
        lo_a, hi_a = np.broadcast_arrays(_as_array(lo), _as_array(hi))
        cap = math.inf if self.max is None else self.max
        top = np.minimum(hi_a, cap)
        za = self._z(np.maximum(lo_a, 0.0))
        with np.errstate(divide="ignore"):
            zb = np.where(np.isfinite(top), self._z(np.where(np.isfinite(top), top, 1.0)), np.inf)
        live = (top > lo_a) & (top > 0)
        out = [np.where(live, self._raw_partial(za, np.maximum(zb, za), k), 0.0) for k in range(3)]
        if self.max is not None:
            tail = float(ndtr(-self._z(np.array([self.max]))[0]))
            hit = (lo_a < self.max) & (self.max <= hi_a)
            out = [o + np.where(hit, tail * self.max**k, 0.0) for k, o in enumerate(out)]
        return out[0], out[1], out[2]

    @cached_property
    def _whole(self) -> tuple[float, float]:
        _, m1, m2 = self.partial_moments(-math.inf, math.inf)
        return float(m1), float(m2)

    def mean(self) -> float:
        return self._whole[0]

    def second_moment(self) -> float:
        return self._whole[1]

    def cdf(self, x: FloatArray) -> FloatArray:
        x = _as_array(x)
        c = ndtr(self._z(x))
        if self.max is not None:
            c = np.where(x >= self.max, 1.0, c)
        return np.asarray(c, dtype=np.float64)

    def quantile(self, q: float) -> float:
        value = math.exp(self.mu + self.s * float(ndtri(q)))
        return value if self.max is None else min(value, self.max)

    def upper(self) -> float:
        return math.inf if self.max is None else self.max

    def atoms(self, bins: int = 32, edges: tuple[float, ...] = (), *, tails: bool = True) -> Atoms:
        """Equiprobable bins in z, refined in both tails out to ±7σ, plus the given edges;
        two atoms per bin."""
        z = list(ndtri(np.linspace(0.0, 1.0, max(bins, 2) + 1)[1:-1]))
        if tails:
            z += [s * t for t in _TAIL_Z for s in (-1.0, 1.0)]
        z += [float(v) for v in self._z(np.array([e for e in edges if e > 0]))]
        zmax = math.inf
        if self.max is not None:
            zmax = float(self._z(np.array([self.max]))[0])
            z = [v for v in z if v < zmax] + [zmax]
        zs = np.array(sorted({-np.inf, *z, zmax}))
        za, zb = zs[:-1], zs[1:]
        w = self._raw_partial(za, zb, 0)
        keep = w > 0
        za, zb, w = za[keep], zb[keep], w[keep]
        m1 = self._raw_partial(za, zb, 1) / w
        var = np.maximum(self._raw_partial(za, zb, 2) / w - m1**2, 0.0)
        atoms = _two_point(np.exp(self.mu + self.s * za), m1, var, w)
        if self.max is None:
            return atoms
        tail = float(ndtr(-zmax))
        points = np.append(atoms.points, self.max)
        weights = np.append(atoms.weights * (1.0 - tail), tail)
        return Atoms(points, weights)

    def describe(self) -> str:
        clip = f", max {self.max:g}" if self.max is not None else ""
        p99 = self.quantile(0.99)
        return f"lognormal(median {self.median:g}, p99 {p99:.4g}{clip})"


class _Count(_Dist):
    """Shared machinery of count distributions (support 0, 1, 2, ... plus an offset)."""

    offset: int = Field(default=0, ge=0)

    def _frozen(self) -> Any:
        raise NotImplementedError

    @cached_property
    def _support(self) -> Atoms:
        rv = self._frozen()
        top = int(rv.isf(_COUNT_TAIL)) + 2
        k = np.arange(top + 1, dtype=np.float64)
        p = rv.pmf(k)
        p = p / p.sum()
        keep = p > 0
        return Atoms(k[keep] + self.offset, p[keep])

    def discrete_support(self) -> Atoms:
        return self._support

    def mean(self) -> float:
        return self._support.mean()

    def second_moment(self) -> float:
        return self._support.second_moment()

    def cdf(self, x: FloatArray) -> FloatArray:
        x = _as_array(x)
        return np.asarray(self._frozen().cdf(np.floor(x) - self.offset), dtype=np.float64)

    def atoms(self, bins: int = 32, edges: tuple[float, ...] = (), *, tails: bool = True) -> Atoms:
        return self._support

    def quantile(self, q: float) -> float:
        return float(self._frozen().ppf(q)) + self.offset

    def upper(self) -> float:
        return math.inf

    @property
    def integer(self) -> bool:
        return True


class NegBin(_Count):
    """
    A negative binomial count (overdispersed): ``mean`` and ``dispersion`` r, so
    ``var = mean + mean²/r``; ``offset`` shifts the support (``offset: 1`` = at least one).
    The ``mean`` is of the count before the offset.
    """

    dist: Literal["negbin"] = "negbin"
    mean_: float = Field(alias="mean", gt=0)
    dispersion: float = Field(gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def p(self) -> float:
        return self.dispersion / (self.dispersion + self.mean_)

    def _frozen(self) -> Any:
        return nbinom(self.dispersion, self.p)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.negative_binomial(self.dispersion, self.p, n).astype(np.float64) + self.offset

    def describe(self) -> str:
        off = f"{self.offset} + " if self.offset else ""
        return f"{off}negbin(mean {self.mean_:g}, dispersion {self.dispersion:g})"


class Poisson(_Count):
    """A Poisson count with ``mean`` (before ``offset``)."""

    dist: Literal["poisson"] = "poisson"
    mean_: float = Field(alias="mean", gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def _frozen(self) -> Any:
        return poisson(self.mean_)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.poisson(self.mean_, n).astype(np.float64) + self.offset

    def describe(self) -> str:
        off = f"{self.offset} + " if self.offset else ""
        return f"{off}poisson(mean {self.mean_:g})"


class Empirical(_Dist):
    """
    Samples from a trace, resampled with replacement.

    Give ``values`` inline, or ``file`` (CSV with a header, or JSON lines) and ``column``;
    the loader reads the file relative to the graph file and fills ``values``.
    """

    dist: Literal["empirical"] = "empirical"
    values: tuple[float, ...] | None = None
    file: str | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _source(self) -> Empirical:
        if self.values is None and self.file is None:
            raise ValueError("give values (inline samples) or file (a CSV or JSON-lines trace)")
        if self.values is not None:
            if len(self.values) == 0:
                raise ValueError("the trace has no samples")
            if any(not math.isfinite(v) or v < 0 for v in self.values):
                raise ValueError("samples must be finite and >= 0")
        return self

    @cached_property
    def _sorted(self) -> FloatArray:
        if self.values is None:
            raise ValueError(f"empirical samples from {self.file!r} were never loaded")
        return np.sort(np.asarray(self.values, dtype=np.float64))

    @cached_property
    def _unique(self) -> Atoms:
        values, counts = np.unique(self._sorted, return_counts=True)
        return Atoms(values, counts / counts.sum())

    def discrete_support(self) -> Atoms:
        return self._unique

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        s = self._sorted
        return s[rng.integers(0, s.shape[0], n)]

    def mean(self) -> float:
        return float(self._sorted.mean())

    def second_moment(self) -> float:
        return float((self._sorted**2).mean())

    def cdf(self, x: FloatArray) -> FloatArray:
        s = self._sorted
        return np.asarray(
            np.searchsorted(s, _as_array(x), side="right") / s.shape[0], dtype=np.float64
        )

    def atoms(self, bins: int = 32, edges: tuple[float, ...] = (), *, tails: bool = True) -> Atoms:
        if self._unique.points.shape[0] <= _EXACT_EMPIRICAL:
            return self._unique
        s = self._sorted
        qs = np.quantile(s, np.linspace(0, 1, 2 * bins + 1)[1:-1])
        cuts = np.unique(np.concatenate([qs, np.asarray(edges, dtype=np.float64)]))
        idx = np.searchsorted(cuts, s, side="left")
        counts = np.bincount(idx)
        nz = counts > 0
        sums = np.bincount(idx, weights=s)[nz]
        sq = np.bincount(idx, weights=s**2)[nz]
        n = counts[nz].astype(np.float64)
        m1 = sums / n
        var = np.maximum(sq / n - m1**2, 0.0)
        lo = np.array([s[idx == i].min() for i in np.flatnonzero(nz)])
        return _two_point(lo, m1, var, n / s.shape[0])

    def quantile(self, q: float) -> float:
        return float(np.quantile(self._sorted, q))

    def upper(self) -> float:
        return float(self._sorted[-1])

    @property
    def integer(self) -> bool:
        return bool(np.all(self._sorted == np.floor(self._sorted)))

    def describe(self) -> str:
        where = f" from {self.file}" + (f"[{self.column}]" if self.column else "")
        n = len(self.values) if self.values is not None else 0
        return f"empirical({n} samples{where if self.file else ''})"


def _coerce(value: Any) -> Any:
    """A bare number in a spec means a fixed value."""
    if isinstance(value, bool):
        raise ValueError("expected a number or a distribution, got a boolean")
    if isinstance(value, int | float):
        return {"dist": "fixed", "value": value}
    return value


Dist = Annotated[
    Fixed | LogNormal | NegBin | Poisson | Empirical,
    Field(discriminator="dist"),
    BeforeValidator(_coerce),
]
"""Any distribution; a plain number is :class:`Fixed`."""

AnyDist = Fixed | LogNormal | NegBin | Poisson | Empirical

__all__ = [
    "Z99",
    "AnyDist",
    "Atoms",
    "Dist",
    "Empirical",
    "Fixed",
    "LogNormal",
    "NegBin",
    "Poisson",
]
