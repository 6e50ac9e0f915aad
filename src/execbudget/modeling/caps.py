"""
Deriving enforcement parameters from the model (costmodel.md §4.5).

Every cap is chosen so that, on its own, it stops at most ``ε`` of legitimate runs (the
``truncation`` target, 0.1% by default), and is reported with the rate it really implies:

* counters (steps, calls, retries, tool calls, branches started): the smallest ``H`` with
  ``P(X > H) <= ε``, read from the **exact** distribution (transform engine) when it is
  available, otherwise from the simulation;
* per-call input and output ceilings and the run's token budget: the ``1 - ε`` quantile of
  the largest per-call value (or of the total) in a run, rounded up;
* per-call cost: the ``1 - ε`` quantile of the largest hold a run makes once the token
  ceilings apply (the runtime holds input + the clamped ``max_tokens``);
* run cost: the ``1 - ε`` quantile of the run cost **re-simulated with the other caps**;
* daily workflow cost (only with a daily run volume): ``V·μ + 3.09·σ·√V``, the one-sided
  99.9% normal band of a day's total (the tail scenario ``V·μ + ⌈V/1000⌉·(p99.9 − μ)`` is
  reported next to it);
* concurrency and depth are structural (the graph's own limits).

Rounded values are rounded *up* (two significant digits), which can only lower the rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .common import DIMS, N_DIMS
from .compiled import CompiledGraph, CompiledModel
from .kernel_fanout import FanOutKernel
from .montecarlo import COUNTERS, Simulation, simulate
from .simcaps import SimCaps
from .transform import TransformResult

#: z of a one-sided 99.9% normal band.
_Z999 = 3.090232306167813


def nice_up(x: float, digits: int = 2) -> float:
    """Round up to ``digits`` significant digits (0.04231 → 0.043, 31,234 → 32,000)."""
    if x <= 0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - (digits - 1)
    step = 10.0**e
    return round(math.ceil(x / step - 1e-9) * step, max(-e, 0))


@dataclass
class DerivedCap:
    """One derived cap and what it costs in truncated runs."""

    key: str  # policy key: "steps", "cost", "per_call.max_input_tokens", ...
    value: float
    unit: str  # "count", "tokens", "money", "seconds"
    rule: str
    exceed: float | None = None  # P(an uncapped run would go past it), from the simulation
    exact_exceed: float | None = None  # the same from the exact distribution, if known
    stopped: float | None = None  # share of runs this cap stopped in the what-if


@dataclass
class CapSet:
    """The derived caps of a workflow."""

    truncation: float
    caps: dict[str, DerivedCap] = field(default_factory=dict)
    concurrency: int | None = None
    depth: int | None = None
    daily_cost: float | None = None
    daily_tail_scenario: float | None = None
    runs_per_day: int | None = None
    warnings: list[str] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        cap = self.caps.get(key)
        return cap.value if cap else None

    def sim_caps(self, *, money: bool = True) -> SimCaps:
        """The caps as a simulation sees them (``money=False``: without cost caps)."""
        run = np.full(N_DIMS, np.inf)
        for i, dim in enumerate(DIMS):
            if dim == "cost" and not money:
                continue
            v = self.value(dim)
            if v is not None:
                run[i] = v
        inf = math.inf
        return SimCaps(
            run=run,
            max_input_tokens=self.value("per_call.max_input_tokens") or inf,
            max_output_tokens=self.value("per_call.max_output_tokens") or inf,
            max_cost=(self.value("per_call.max_cost") or inf) if money else inf,
        )


def _concurrency(graph: CompiledGraph, fan_cap: float, env_upper: np.ndarray) -> float:
    """Branches in flight at most: each fan-out runs ``min(max_concurrency, K, cap)`` items,
    each of which may have its own branches in flight."""
    best = 0.0
    for k in graph.kernels:
        if isinstance(k, FanOutKernel):
            width = min(k.max_concurrency or math.inf, fan_cap, k.count.upper(env_upper))
            best = max(best, width * (1 + _concurrency(k.item, fan_cap, env_upper)))
    return min(best, fan_cap)


def _cliff_warnings(model: CompiledModel, max_input: float | None) -> list[str]:
    """Price cliffs the input ceiling lets calls cross (costmodel.md §4.5: warn when the
    tail of per-call input reaches a tier threshold)."""
    if max_input is None:
        return []
    crossed: dict[tuple[float, str], list[str]] = {}
    for name, k in model.graph.walk():
        card = getattr(k, "card", None)
        if card is None:
            continue
        for i, threshold in enumerate(card.thresholds):
            if max_input > threshold:
                above, below = card.levels[i + 1], card.levels[i]
                ratio = above.input / below.input if below.input else float("inf")
                crossed.setdefault((threshold, f"{ratio:.3g}×"), []).append(name)
    return [
        f"per_call.max_input_tokens {max_input:,.0f} is above the {t:,.0f}-token price tier "
        f"of {', '.join(nodes)}: a call past it costs {ratio} the input rate on every token"
        for (t, ratio), nodes in crossed.items()
    ]


def derive_caps(
    model: CompiledModel,
    sim: Simulation,
    *,
    truncation: float,
    exact_counts: Mapping[str, TransformResult] | None = None,
    runs_per_day: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CapSet, Simulation]:
    """
    Derive every cap from the uncapped simulation ``sim`` (and exact counter
    distributions); returns the caps and the re-simulation used for the cost caps.
    """
    eps = truncation
    out = CapSet(truncation=eps, runs_per_day=runs_per_day)
    exact_counts = exact_counts or {}
    for dim in COUNTERS:
        hist = sim.counters[dim]
        exact = exact_counts.get(dim)
        if hist.max() == 0 and (exact is None or exact.mean() == 0):
            continue
        if exact is not None:
            value = exact.cap_for(eps)
            rule = f"least H: P({dim} > H) ≤ {eps:g} (exact)"
        else:
            value = float(hist.cap_for(eps))
            rule = f"least H: P({dim} > H) ≤ {eps:g} (simulated)"
        out.caps[dim] = DerivedCap(
            dim,
            value,
            "count",
            rule,
            exceed=hist.exceed(value),
            exact_exceed=exact.exceed(value) if exact is not None else None,
        )
    token_keys = {
        "tokens": "tokens",
        "max_input_tokens": "per_call.max_input_tokens",
        "max_output_tokens": "per_call.max_output_tokens",
    }
    for name, key in token_keys.items():
        lh = sim.maxima[name]
        if lh.max() == 0:
            continue
        value = float(math.ceil(nice_up(lh.cap_for(eps))))
        what = "run total" if name == "tokens" else f"max per-call {name[4:-7]} in a run"
        out.caps[key] = DerivedCap(
            key, value, "tokens", f"q{1 - eps:g} of the {what}", exceed=lh.exceed(value)
        )
    if sim.maxima["time"].max() > 0:
        lh = sim.maxima["time"]
        value = float(math.ceil(lh.cap_for(eps)))
        out.caps["time"] = DerivedCap(
            "time", value, "seconds", f"q{1 - eps:g} of run time", exceed=lh.exceed(value)
        )
    capped = simulate(
        model,
        sim.runs,
        sim.seed,
        caps=out.sim_caps(money=False),
        workers=workers,
        progress=progress,
        chunk_size=sim.chunk_size,
    )
    hold = capped.maxima["max_hold"]
    if hold.max() > 0:
        value = nice_up(hold.cap_for(eps))
        out.caps["per_call.max_cost"] = DerivedCap(
            "per_call.max_cost",
            value,
            "money",
            f"q{1 - eps:g} of the max hold in a run, token caps on",
            exceed=hold.exceed(value),
        )
    q = capped.quantiles((1 - eps,))[1 - eps].value
    value = nice_up(q)
    out.caps["cost"] = DerivedCap(
        "cost",
        value,
        "money",
        f"q{1 - eps:g} of run cost, other caps on",
        exceed=sim.exceed(value),
    )
    out.warnings += _cliff_warnings(model, out.value("per_call.max_input_tokens"))
    fan = out.value("fan_out")
    if fan is not None:
        out.concurrency = int(_concurrency(model.graph, fan, model.env_upper()))
    out.depth = 1 + model.graph.depth
    if runs_per_day:
        mu, sd = capped.mean().value, capped.sd().value
        out.daily_cost = nice_up(runs_per_day * mu + _Z999 * sd * math.sqrt(runs_per_day), 3)
        # the other band of §4.5: the day's expected tail runs all at the capped p99.9
        q999 = capped.quantiles((0.999,))[0.999].value
        tail_runs = math.ceil(runs_per_day * 0.001)
        out.daily_tail_scenario = runs_per_day * mu + tail_runs * max(q999 - mu, 0.0)
    return out, capped


def record_stops(caps: CapSet, whatif: Simulation) -> None:
    """Fill in which share of runs each cap stopped in the what-if."""
    rates = whatif.denied_rates()
    for key, cap in caps.caps.items():
        if key == "time":  # deadlines are derived, not replayed (runs have no clock here)
            continue
        cap.stopped = rates.get(key.split(".")[-1], 0.0)


__all__ = ["CapSet", "DerivedCap", "derive_caps", "nice_up", "record_stops"]
