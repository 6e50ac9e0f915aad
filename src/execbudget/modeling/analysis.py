"""
The whole modelling pass, as one call: what ``execbudget model`` reports.

``analyze`` compiles the graph, solves it exactly, simulates it, derives the counters'
exact distributions with the transform engine, derives the caps, re-simulates with them
(the what-if), computes the guaranteed worst case and the sensitivities, and checks that
the engines agree. Everything the report, the figure, the JSON and the emitted policy
show comes from the :class:`Analysis` it returns.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .caps import CapSet, derive_caps, record_stops
from .common import COST, DIMS
from .compiled import CompiledModel, compile_graph
from .loader import load_graph
from .markov import ExactMoments, Sensitivity, exact_moments, sensitivities
from .mcstats import z_for
from .montecarlo import COUNTERS, Simulation, simulate
from .rates import Pricer
from .spec import GraphSpec
from .transform import TransformResult, distribution
from .worstcase import WorstCase, worst_case

#: Counter distributions are solved exactly when the lattice stays below this size.
_MAX_COUNT_LATTICE = 1 << 16

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Check:
    """Does the exact value fall inside the simulation's confidence interval?"""

    quantity: str
    exact: float
    simulated: float
    lo: float
    hi: float

    @property
    def agrees(self) -> bool:
        tol = 1e-12 * max(abs(self.exact), 1.0)
        return self.lo - tol <= self.exact <= self.hi + tol


@dataclass
class Analysis:
    """Everything known about one workflow's cost (see :func:`analyze`)."""

    model: CompiledModel
    exact: ExactMoments
    sim: Simulation
    capped: Simulation
    whatif: Simulation
    caps: CapSet
    worst: WorstCase
    sensitivity: list[Sensitivity]
    counts_exact: dict[str, TransformResult]
    checks: list[Check]
    source: str | None
    digest: str
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.spec.name

    @property
    def currency(self) -> str:
        return self.model.currency

    def amplification(self) -> tuple[float, float]:
        """Mean and p99 run cost over the mean cost of the entry call."""
        entry = self.exact.entry_cost
        if entry <= 0:
            return math.nan, math.nan
        p99 = self.sim.quantiles((0.99,))[0.99].value
        return float(self.exact.mean[COST]) / entry, p99 / entry


def _checks(exact: ExactMoments, sim: Simulation) -> list[Check]:
    out = []
    m, s = sim.mean(), sim.sd()
    out.append(Check("mean cost", float(exact.mean[COST]), m.value, m.lo, m.hi))
    out.append(Check("sd cost", float(exact.sd[COST]), s.value, s.lo, s.hi))
    z = z_for(sim.confidence)
    for dim in COUNTERS:
        h = sim.counters[dim]
        if h.max() == 0:
            continue
        mu = h.mean()
        var = float(h.counts @ (np.arange(h.counts.shape[0]) - mu) ** 2) / max(h.n - 1, 1)
        half = z * math.sqrt(var / h.n)
        out.append(
            Check(f"mean {dim}", float(exact.mean[DIMS.index(dim)]), mu, mu - half, mu + half)
        )
    return out


def _count_distributions(model: CompiledModel, exact: ExactMoments) -> dict[str, TransformResult]:
    out = {}
    for dim in COUNTERS:
        i = DIMS.index(dim)
        mean, sd = float(exact.mean[i]), float(exact.sd[i])
        if mean <= 0:
            continue
        upper = mean + 25 * sd + 10
        if upper > _MAX_COUNT_LATTICE:
            continue
        out[dim] = distribution(model, dim, upper=upper)
    return out


def analyze(
    graph: GraphSpec | str | Path,
    *,
    runs: int = 200_000,
    seed: int = 0,
    workers: int = 1,
    pricer: Pricer | None = None,
    truncation: float | None = None,
    runs_per_day: int | None = None,
    progress: Progress | None = None,
    exact_counts: bool = True,
) -> Analysis:
    """
    Model one workflow end to end (see the module docstring).

    Args:
        graph: a spec, or the path of a YAML/TOML graph file.
        runs: trajectories per simulation (three simulations are run: uncapped, capped
            for the cost caps, and the what-if with every cap).
        seed: the seed of every simulation (results are reproducible for a seed).
        workers: processes for the simulations (1 or 2).
        truncation: the share of runs each cap may stop (default: the graph's
            ``derive.truncation``, 0.1%).
        runs_per_day: daily run volume for the workflow's daily budget (default: the
            graph's ``volume``).
    """
    t0 = time.perf_counter()
    source = None
    if isinstance(graph, str | Path):
        source = str(graph)
        text = Path(graph).read_bytes()
        spec = load_graph(graph)
    else:
        spec = graph
        text = spec.model_dump_json().encode()
    digest = hashlib.sha256(text).hexdigest()
    timings: dict[str, float] = {}

    def stage(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    tick = time.perf_counter()
    model = compile_graph(spec, pricer, source=source)
    exact = exact_moments(model)
    timings["exact"] = time.perf_counter() - tick
    tick = time.perf_counter()
    sim = simulate(model, runs, seed, workers=workers, progress=stage("simulate"))
    timings["simulate"] = time.perf_counter() - tick
    tick = time.perf_counter()
    counts = _count_distributions(model, exact) if exact_counts else {}
    timings["transform"] = time.perf_counter() - tick
    eps = truncation if truncation is not None else spec.derive.truncation
    volume = (
        runs_per_day
        if runs_per_day is not None
        else (spec.volume.runs_per_day if spec.volume else None)
    )
    tick = time.perf_counter()
    caps, capped = derive_caps(
        model,
        sim,
        truncation=eps,
        exact_counts=counts,
        runs_per_day=volume,
        workers=workers,
        progress=stage("capped"),
    )
    whatif = simulate(
        model,
        runs,
        seed,
        caps=caps.sim_caps(),
        workers=workers,
        progress=stage("what-if"),
        chunk_size=sim.chunk_size,
    )
    record_stops(caps, whatif)
    timings["caps"] = time.perf_counter() - tick
    tick = time.perf_counter()
    worst = worst_case(model, caps)
    sens = sensitivities(model)
    timings["worst+sensitivity"] = time.perf_counter() - tick
    return Analysis(
        model=model,
        exact=exact,
        sim=sim,
        capped=capped,
        whatif=whatif,
        caps=caps,
        worst=worst,
        sensitivity=sens,
        counts_exact=counts,
        checks=_checks(exact, sim),
        source=source,
        digest=digest,
        elapsed_s=time.perf_counter() - t0,
        timings=timings,
    )


__all__ = ["Analysis", "Check", "analyze"]
