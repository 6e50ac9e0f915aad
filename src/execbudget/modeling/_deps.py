"""
Typed handles to scipy and networkx.

Neither package ships type information and the project does not depend on their stub
packages, so the modeler imports them here, once, and exposes the few functions it uses
with numpy types. (With ``scipy-stubs`` and ``types-networkx`` installed this module could
become plain imports.)
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ._arrays import FloatArray

nx: Any = importlib.import_module("networkx")
_special: Any = importlib.import_module("scipy.special")
_stats: Any = importlib.import_module("scipy.stats")


def ndtr(x: FloatArray | float) -> FloatArray:
    """The standard normal cdf Φ."""
    return np.asarray(_special.ndtr(x), dtype=np.float64)


def ndtri(p: FloatArray | float) -> FloatArray:
    """The standard normal quantile Φ⁻¹."""
    return np.asarray(_special.ndtri(p), dtype=np.float64)


def nbinom(r: float, p: float) -> Any:
    """A frozen ``scipy.stats.nbinom`` (failures before ``r`` successes)."""
    return _stats.nbinom(r, p)


def poisson(mean: float) -> Any:
    """A frozen ``scipy.stats.poisson``."""
    return _stats.poisson(mean)


__all__ = ["nbinom", "ndtr", "ndtri", "nx", "poisson"]
