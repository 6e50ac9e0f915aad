"""
Pieces shared by the node kernels and the three engines.

* ``DIMS`` — what a run consumes, in the runtime's dimension names. The exact engine's
  rewards, the Monte Carlo consumption vectors and the caps all use this order.
* :class:`CQty` — a compiled size: ``times × envelope[var] + base``.
* :class:`CRetry` — the retry law of a call (failures before success, with an incident
  regime), shared by every kernel so retries mean the same thing everywhere.
* :class:`VisitMoments` / :class:`VisitDraw` — what one node visit contributes, for the
  exact and the Monte Carlo engine.
* :class:`Lattice` — the grid of the transform engine (money or counts), with an
  exponential tilt that damps wrap-around.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

import numpy as np

from ._arrays import BoolArray, ComplexArray, FloatArray, Int8Array, IntArray
from .distributions import AnyDist, Fixed

DIMS: Final = ("cost", "tokens", "steps", "calls", "retries", "tool_calls", "fan_out")
COST, TOKENS, STEPS, CALLS, RETRIES, TOOL_CALLS, FAN_OUT = range(7)
N_DIMS: Final = len(DIMS)
#: Dimensions a runtime can meet by clamping ``max_tokens`` instead of refusing the call.
CLAMPABLE: Final = (COST, TOKENS)
#: Extra denial reasons past the run dimensions (per-call caps).
DENY_INPUT: Final = N_DIMS
DENY_CALL_COST: Final = N_DIMS + 1
DENIAL_NAMES: Final = (*DIMS, "max_input_tokens", "max_cost")

OK, EXHAUSTED, DENIED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CQty:
    """A size: ``base`` (drawn per use) plus ``times × envelope[var]`` (per run)."""

    base: AnyDist
    var: int | None = None
    times: float = 0.0

    @property
    def env_dependent(self) -> bool:
        return self.var is not None and self.times != 0.0

    def shift(self, env: FloatArray) -> FloatArray:
        """The envelope part for each row of ``env`` (shape ``(n, d)``)."""
        if self.var is None or self.times == 0.0:
            return np.zeros(env.shape[0])
        return self.times * env[:, self.var]

    def sample(self, rng: np.random.Generator, env: FloatArray) -> FloatArray:
        n = env.shape[0]
        if isinstance(self.base, Fixed):
            base = np.full(n, self.base.value)
        else:
            base = self.base.sample(rng, n)
        return base + self.shift(env) if self.env_dependent else base

    def mean(self, env: FloatArray) -> FloatArray:
        return self.base.mean() + self.shift(env)

    def variance(self) -> float:
        return self.base.variance()

    def upper(self, env_upper: FloatArray) -> float:
        """The largest value given the largest envelope values."""
        top = self.base.upper()
        if self.env_dependent:
            assert self.var is not None
            top += self.times * float(env_upper[self.var])
        return top


ZERO = CQty(Fixed(value=0.0))


@dataclass(frozen=True)
class CRetry:
    """
    The failures of one call: each attempt fails with ``p`` (per visit, ``p`` is drawn
    from ``regimes`` = ((weight, p), ...)); at most ``r`` retries; a failed attempt costs
    ``f`` of a normal one; ``exhaust_continue`` when all failing lets the run go on.
    """

    r: int = 0
    f: float = 1.0
    regimes: tuple[tuple[float, float], ...] = ((1.0, 0.0),)
    exhaust_continue: bool = False

    @cached_property
    def q_ok(self) -> FloatArray:
        """``P(j failures, then success)`` for ``j = 0..r`` (sums to ``1 - q_exh``)."""
        j = np.arange(self.r + 1)
        return np.asarray(sum(w * (1 - p) * p**j for w, p in self.regimes), dtype=np.float64)

    @cached_property
    def q_exh(self) -> float:
        """``P(every attempt fails)``."""
        return float(sum(w * p ** (self.r + 1) for w, p in self.regimes))

    @cached_property
    def stats(self) -> tuple[float, float, float, float, float, float]:
        """``E[1+fj], E[(1+fj)²], E[j], E[j²], E[j+1], E[(j+1)²]`` given success."""
        j = np.arange(self.r + 1, dtype=np.float64)
        f = self.f
        return (
            self.ok_moment(1 + f * j),
            self.ok_moment((1 + f * j) ** 2),
            self.ok_moment(j),
            self.ok_moment(j**2),
            self.ok_moment(j + 1),
            self.ok_moment((j + 1) ** 2),
        )

    def ok_moment(self, g: FloatArray) -> float:
        """``E[g(j) | success]`` for values ``g[j]``, ``j = 0..r``."""
        p = 1.0 - self.q_exh
        return float(self.q_ok @ g) / p if p > 0 else 0.0

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, BoolArray]:
        """Failures per visit and whether the visit exhausted its retries."""
        if len(self.regimes) == 1:
            p: FloatArray | float = self.regimes[0][1]
        else:
            weights = np.array([w for w, _ in self.regimes])
            ps = np.array([q for _, q in self.regimes])
            p = ps[rng.choice(len(ps), size=n, p=weights / weights.sum())]
        if np.all(np.asarray(p) == 0.0):
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        u = 1.0 - rng.random(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.floor(np.log(u) / np.log(p))
        f = np.nan_to_num(f, nan=0.0, posinf=self.r + 1.0)
        exhausted = f > self.r
        return np.minimum(f, self.r + 1).astype(np.int64), exhausted


NO_RETRY = CRetry()


@dataclass(slots=True)
class VisitMoments:
    """
    First and second moments of what one visit consumes, per outcome, for each envelope
    atom: ``p_ok`` (A,), ``m_ok``/``s_ok``/``m_exh``/``s_exh`` (N_DIMS, A). The ``m``/``s``
    are conditional on the outcome.
    """

    p_ok: FloatArray
    m_ok: FloatArray
    s_ok: FloatArray
    m_exh: FloatArray
    s_exh: FloatArray

    @staticmethod
    def zeros(a: int) -> VisitMoments:
        z = np.zeros((N_DIMS, a))
        return VisitMoments(np.ones(a), z.copy(), z.copy(), z.copy(), z.copy())

    @property
    def p_exh(self) -> FloatArray:
        return 1.0 - self.p_ok

    def mean(self) -> FloatArray:
        return self.p_ok * self.m_ok + self.p_exh * self.m_exh

    def second(self) -> FloatArray:
        return self.p_ok * self.s_ok + self.p_exh * self.s_exh


@dataclass(slots=True)
class VisitDraw:
    """What a batch of ``n`` visits consumed in a Monte Carlo run."""

    use: FloatArray  # (n, N_DIMS)
    outcome: Int8Array = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    denied: Int8Array = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    max_in: FloatArray = field(default_factory=lambda: np.zeros(0))
    max_out: FloatArray = field(default_factory=lambda: np.zeros(0))
    max_hold: FloatArray = field(default_factory=lambda: np.zeros(0))
    clamped: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    time: FloatArray = field(default_factory=lambda: np.zeros(0))
    sub: FloatArray | None = None  # (n, sub columns) for fan-out nodes

    @staticmethod
    def empty(n: int) -> VisitDraw:
        return VisitDraw(
            use=np.zeros((n, N_DIMS)),
            outcome=np.zeros(n, dtype=np.int8),
            denied=np.full(n, -1, dtype=np.int8),
            max_in=np.zeros(n),
            max_out=np.zeros(n),
            max_hold=np.zeros(n),
            clamped=np.zeros(n, dtype=bool),
            time=np.zeros(n),
        )


@dataclass(frozen=True)
class Lattice:
    """
    ``m`` points ``k·h`` for the transform engine; ``theta`` tilts each pmf by
    ``exp(-theta·k)`` before the FFT, so mass that would wrap around the end of the grid
    is damped by ``exp(-theta·m)``.
    """

    h: float
    m: int
    theta: float

    @staticmethod
    def for_range(upper: float, m: int = 1 << 16, *, integer: bool = False) -> Lattice:
        if integer:
            m = max(m, 1 << max(math.ceil(math.log2(max(upper, 2.0) + 1)), 6))
            return Lattice(1.0, m, 10.0 / m)
        return Lattice(upper / m, m, 10.0 / m)

    @cached_property
    def _k(self) -> IntArray:
        return np.arange(self.m, dtype=np.int64)

    @cached_property
    def _roots(self) -> ComplexArray:
        return np.asarray(np.exp(-2j * np.pi * np.arange(self.m) / self.m), dtype=np.complex128)

    def cf(self, pmf: FloatArray) -> ComplexArray:
        """The (tilted) transform of a pmf on the lattice."""
        tilt = np.exp(-self.theta * np.arange(self.m))
        return np.asarray(np.fft.fft(pmf * tilt), dtype=np.complex128)

    def power(self, n: int) -> ComplexArray:
        """The transform of a point mass at lattice index ``n`` (a whole number)."""
        idx = (self._k * (int(n) % self.m)) % self.m
        return np.asarray(math.exp(-self.theta * n) * self._roots[idx], dtype=np.complex128)

    def point(self, x: float) -> ComplexArray:
        """The transform of a point mass at ``x`` (split between the two nearest points)."""
        pos = min(max(x / self.h, 0.0), self.m - 1.0)
        lo = math.floor(pos)
        frac = pos - lo
        out = (1.0 - frac) * self.power(lo)
        if frac > 0:
            out = out + frac * self.power(lo + 1)
        return out

    def invert(self, cf: ComplexArray) -> FloatArray:
        pmf = np.fft.ifft(cf).real * np.exp(self.theta * np.arange(self.m))
        return np.asarray(np.maximum(pmf, 0.0), dtype=np.float64)

    @property
    def values(self) -> FloatArray:
        return np.asarray(np.arange(self.m) * self.h, dtype=np.float64)


__all__ = [
    "CALLS",
    "CLAMPABLE",
    "COST",
    "DENIAL_NAMES",
    "DENIED",
    "DENY_CALL_COST",
    "DENY_INPUT",
    "DIMS",
    "EXHAUSTED",
    "FAN_OUT",
    "NO_RETRY",
    "N_DIMS",
    "OK",
    "RETRIES",
    "STEPS",
    "TOKENS",
    "TOOL_CALLS",
    "ZERO",
    "CQty",
    "CRetry",
    "Lattice",
    "VisitDraw",
    "VisitMoments",
]
