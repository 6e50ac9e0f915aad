"""
Summaries of Monte Carlo samples that stay small and merge across chunks and processes.

* Quantiles come with a confidence interval from order statistics: the ``p`` quantile of
  ``n`` samples lies between the ranks ``np ± z·√(np(1−p))`` with the stated confidence
  (costmodel.md §4.4). The DKW band is too wide to pin a p99.9, so it is not used.
* Whole-number counters (steps, calls, retries, ...) are kept as exact histograms.
* Large or continuous per-run maxima (tokens, per-call input, holds, time) are kept on a
  log grid of 400 bins per decade; a cap read from it is a bin's upper edge, so the
  exceedance probability reported for it is exact, not interpolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._arrays import FloatArray, IntArray
from ._deps import ndtri

_PER_DECADE = 400
_LO_EXP = -12
_HI_EXP = 13
_NBINS = (_HI_EXP - _LO_EXP) * _PER_DECADE


def z_for(confidence: float) -> float:
    return float(ndtri(0.5 + confidence / 2))


@dataclass(frozen=True)
class Estimate:
    """A value with a confidence interval ``[lo, hi]``."""

    value: float
    lo: float
    hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi


def mean_ci(values: FloatArray, confidence: float = 0.99) -> Estimate:
    n = values.shape[0]
    mu = float(values.mean())
    se = float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    z = z_for(confidence)
    return Estimate(mu, mu - z * se, mu + z * se)


def sd_ci(values: FloatArray, confidence: float = 0.99) -> Estimate:
    """The standard deviation with its asymptotic interval (uses the fourth moment)."""
    n = values.shape[0]
    d = values - values.mean()
    m2 = float((d**2).mean())
    m4 = float((d**4).mean())
    sd = math.sqrt(m2)
    se = math.sqrt(max(m4 - m2 * m2, 0.0) / n) / (2 * sd) if sd > 0 and n > 1 else 0.0
    z = z_for(confidence)
    return Estimate(sd, max(sd - z * se, 0.0), sd + z * se)


def quantiles_ci(
    values: FloatArray, qs: tuple[float, ...], confidence: float = 0.99
) -> dict[float, Estimate]:
    """Order-statistic confidence intervals for several quantiles at once (one partition)."""
    n = values.shape[0]
    z = z_for(confidence)
    ranks: dict[float, tuple[int, int, int]] = {}
    for q in qs:
        c = q * n
        half = z * math.sqrt(c * (1 - q))
        mid = min(max(math.ceil(c) - 1, 0), n - 1)
        lo = min(max(math.floor(c - half) - 1, 0), n - 1)
        hi = min(max(math.ceil(c + half), 0), n - 1)
        ranks[q] = (lo, mid, hi)
    kth = sorted({r for t in ranks.values() for r in t})
    part = np.partition(values, kth)
    return {
        q: Estimate(float(part[mid]), float(part[lo]), float(part[hi]))
        for q, (lo, mid, hi) in ranks.items()
    }


@dataclass
class IntHist:
    """Exact histogram of a whole-number counter."""

    counts: IntArray

    @staticmethod
    def of(values: FloatArray) -> IntHist:
        return IntHist(np.bincount(np.rint(values).astype(np.int64)).astype(np.int64))

    def merge(self, other: IntHist) -> IntHist:
        a, b = self.counts, other.counts
        out = np.zeros(max(a.shape[0], b.shape[0]), dtype=np.int64)
        out[: a.shape[0]] += a
        out[: b.shape[0]] += b
        return IntHist(out)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def exceed(self, x: float) -> float:
        """``P(X > x)``."""
        k = math.floor(x) + 1
        if k >= self.counts.shape[0]:
            return 0.0
        return float(self.counts[max(k, 0) :].sum()) / max(self.n, 1)

    def cap_for(self, eps: float) -> int:
        """The smallest ``H`` with ``P(X > H) <= eps``."""
        tail = np.cumsum(self.counts[::-1])[::-1] / max(self.n, 1)  # tail[k] = P(X >= k)
        ok = np.flatnonzero(np.append(tail[1:], 0.0) <= eps)
        return int(ok[0]) if ok.size else int(self.counts.shape[0] - 1)

    def mean(self) -> float:
        return float(self.counts @ np.arange(self.counts.shape[0])) / max(self.n, 1)

    def max(self) -> int:
        nz = np.flatnonzero(self.counts)
        return int(nz[-1]) if nz.size else 0


@dataclass
class LogHist:
    """Histogram on a log grid (``400`` bins per decade from ``1e-12``), plus a zero bin."""

    counts: IntArray
    zeros: int = 0

    @staticmethod
    def of(values: FloatArray) -> LogHist:
        pos = values[values > 0]
        idx = np.floor((np.log10(pos) - _LO_EXP) * _PER_DECADE).astype(np.int64)
        idx = np.clip(idx, 0, _NBINS - 1)
        return LogHist(
            np.bincount(idx, minlength=_NBINS).astype(np.int64), int((values <= 0).sum())
        )

    def merge(self, other: LogHist) -> LogHist:
        return LogHist(self.counts + other.counts, self.zeros + other.zeros)

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.zeros

    @staticmethod
    def upper_edge(i: int) -> float:
        return float(10 ** (_LO_EXP + (i + 1) / _PER_DECADE))

    def cap_for(self, eps: float) -> float:
        """The smallest bin upper edge ``x`` with ``P(X > x) <= eps`` (0 if all zero)."""
        n = max(self.n, 1)
        above = (np.cumsum(self.counts[::-1])[::-1] - self.counts) / n  # P(X in later bins)
        ok = np.flatnonzero((above <= eps) & (np.cumsum(self.counts) > 0))
        return self.upper_edge(int(ok[0])) if ok.size else 0.0

    def exceed(self, x: float) -> float:
        """``P(X > x)``, exact when ``x`` is a bin edge, otherwise an upper bound."""
        if x <= 0:
            return (self.n - self.zeros) / max(self.n, 1)
        i = math.floor((math.log10(x) - _LO_EXP) * _PER_DECADE + 1e-9)
        return float(self.counts[min(max(i, 0), _NBINS) :].sum()) / max(self.n, 1)

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding the ``q`` quantile."""
        target = q * self.n - self.zeros
        if target <= 0:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.counts), target))
        return self.upper_edge(min(i, _NBINS - 1))

    def max(self) -> float:
        nz = np.flatnonzero(self.counts)
        return self.upper_edge(int(nz[-1])) if nz.size else 0.0


__all__ = ["Estimate", "IntHist", "LogHist", "mean_ci", "quantiles_ci", "sd_ci", "z_for"]
