"""Distributions: moments, atoms, partial moments and lattice masses agree with each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from execbudget.modeling import Empirical, Fixed, LogNormal, NegBin, Poisson
from execbudget.modeling.distributions import Z99


def test_lognormal_from_median_and_p99() -> None:
    d = LogNormal.from_median_p99(800, 8000)
    assert d.s == pytest.approx(math.log(10) / Z99)
    assert d.quantile(0.5) == pytest.approx(800)
    assert d.quantile(0.99) == pytest.approx(8000)
    assert d.mean() == pytest.approx(800 * math.exp(d.s**2 / 2))


def test_lognormal_needs_exactly_one_shape() -> None:
    with pytest.raises(ValueError, match="exactly one of p99 or sigma"):
        LogNormal(median=800)
    with pytest.raises(ValueError, match="must be above the median"):
        LogNormal(median=800, p99=500)


@pytest.mark.parametrize(
    "dist",
    [
        LogNormal(median=800, p99=8000),
        LogNormal(median=800, sigma=1.2, max=6000),
        NegBin(mean=3, dispersion=2, offset=1),
        Poisson(mean=4),
        Fixed(value=7),
        Empirical(values=tuple(np.random.default_rng(1).lognormal(5, 1, 3000))),
    ],
    ids=["lognormal", "clipped", "negbin", "poisson", "fixed", "empirical"],
)
def test_atoms_match_the_first_two_moments(dist: object) -> None:
    atoms = dist.atoms(16, (1000.0,))  # type: ignore[attr-defined]
    assert atoms.weights.sum() == pytest.approx(1.0)
    assert atoms.mean() == pytest.approx(dist.mean(), rel=1e-9)  # type: ignore[attr-defined]
    assert atoms.second_moment() == pytest.approx(dist.second_moment(), rel=1e-9)  # type: ignore[attr-defined]
    assert np.all(atoms.points >= 0)


def test_partial_moments_of_a_clipped_lognormal_match_integration() -> None:
    d = LogNormal(median=800, sigma=1.0, max=5000)
    rv = stats.lognorm(1.0, scale=800)
    for lo, hi in [(0.0, 1000.0), (1000.0, 4000.0), (4000.0, math.inf)]:
        w, m1, m2 = d.partial_moments(lo, hi)
        top = min(hi, 5000.0)
        want_w = rv.cdf(top) - rv.cdf(lo)
        want_m1 = integrate.quad(lambda x: x * rv.pdf(x), lo, top)[0]
        want_m2 = integrate.quad(lambda x: x * x * rv.pdf(x), lo, top)[0]
        if lo < 5000.0 <= hi:  # the clipped mass sits at 5000
            tail = rv.sf(5000.0)
            want_w, want_m1, want_m2 = (
                want_w + tail,
                want_m1 + 5000 * tail,
                want_m2 + 5000**2 * tail,
            )
        assert float(w) == pytest.approx(want_w, rel=1e-7)
        assert float(m1) == pytest.approx(want_m1, rel=1e-6)
        assert float(m2) == pytest.approx(want_m2, rel=1e-6)


def test_negbin_matches_scipy_and_samples() -> None:
    d = NegBin(mean=3, dispersion=4, offset=1)
    assert d.mean() == pytest.approx(4.0)
    assert d.variance() == pytest.approx(3 + 9 / 4)
    x = d.sample(np.random.default_rng(0), 200_000)
    assert x.mean() == pytest.approx(4.0, abs=0.03)
    assert d.integer and x.min() >= 1


def test_lattice_pmf_keeps_mass_and_mean() -> None:
    d = LogNormal(median=100, sigma=0.5)
    pmf = d.lattice_pmf(1.0, 4096)
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf @ np.arange(4096) == pytest.approx(d.mean(), rel=1e-3)
    nb = NegBin(mean=3, dispersion=2)
    scaled = nb.lattice_pmf(0.5, 256, scale=1.5, shift=1.0)
    assert scaled @ (np.arange(256) * 0.5) == pytest.approx(1.5 * 3 + 1.0, rel=1e-9)


def test_empirical_cdf_and_quantiles() -> None:
    d = Empirical(values=(1.0, 2.0, 3.0, 4.0))
    assert d.cdf(np.array([2.0]))[0] == 0.5
    assert d.upper() == 4.0
    assert d.integer
    with pytest.raises(ValueError, match=r"values .*or file"):
        Empirical()
