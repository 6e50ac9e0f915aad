"""
The figure: the run-cost distribution with its percentiles and caps, and cost per node.

Left: a histogram of simulated run cost (log-scaled counts, so the tail stays visible)
with p50/p90/p99/p99.9, the derived run cost cap and the guaranteed worst case marked.
Right: each top-level node's mean cost next to its mean cost in runs at or above the p99,
which is where enforcement matters. PNG or SVG, chosen by the file extension; matplotlib
runs on its Agg backend so no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError
from .analysis import Analysis


def plot(a: Analysis, path: str | Path) -> Path:
    """Draw the figure of ``a`` into ``path`` (``.png`` or ``.svg``)."""
    path = Path(path)
    if path.suffix.lower() not in {".png", ".svg"}:
        raise ConfigurationError(f"--plot {path}: give a .png or .svg file name")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sim = a.sim
    cur = a.currency
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    totals = sim.totals
    hi = max(float(np.quantile(totals, 0.9999)), a.caps.value("cost") or 0.0)
    if math.isfinite(a.worst.guaranteed):
        hi = max(hi, a.worst.guaranteed)
    lo = float(totals.min()) * 0.98
    bins = np.linspace(lo, hi * 1.02 if hi > lo else lo + 1.0, 120)
    left.hist(np.minimum(totals, bins[-1]), bins=bins, color="#4c72b0", alpha=0.85)
    left.set_yscale("log")
    colors = {0.5: "#55a868", 0.9: "#8172b2", 0.99: "#c44e52", 0.999: "#dd8452"}
    for q, est in sim.quantiles((0.5, 0.9, 0.99, 0.999)).items():
        left.axvline(
            est.value, color=colors[q], ls="--", lw=1.2, label=f"p{100 * q:g} {est.value:.4g}"
        )
    cap = a.caps.value("cost")
    if cap is not None:
        left.axvline(cap, color="black", lw=1.6, label=f"run cost cap {cap:.4g}")
    if math.isfinite(a.worst.guaranteed):
        left.axvline(
            a.worst.guaranteed,
            color="black",
            ls=":",
            lw=1.6,
            label=f"guaranteed worst case {a.worst.guaranteed:.4g}",
        )
    left.set_xlabel(f"cost per run ({cur})")
    left.set_ylabel("runs (log scale)")
    left.set_title(f"{a.name}: run cost, {sim.runs:,} runs")
    left.legend(fontsize=8)

    names = list(sim.columns[: sim.main_columns])
    means = sim.node_means()
    tail, _ = sim.tail_means(0.99)
    y = np.arange(len(names))
    right.barh(y - 0.2, [means[n].value for n in names], height=0.4, label="mean", color="#4c72b0")
    right.barh(
        y + 0.2, [tail[n] for n in names], height=0.4, label="mean in runs ≥ p99", color="#c44e52"
    )
    right.set_yticks(y, names)
    right.invert_yaxis()
    right.set_xlabel(f"cost per run ({cur})")
    right.set_title("cost per node")
    right.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["plot"]
