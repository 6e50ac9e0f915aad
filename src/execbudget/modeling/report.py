"""
The analysis as JSON for machines and as a rich terminal report for people.

Money is reported in the graph's currency, rounded to 1e-8 in JSON and to four
significant digits on screen; every simulated figure carries its confidence interval,
and every exact figure is shown next to its simulated twin.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from .analysis import Analysis
from .common import DIMS
from .mcstats import Estimate
from .montecarlo import COUNTERS

_TAIL_Q = 0.99


def _m(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 8)


def _est(e: Estimate) -> dict[str, float | None]:
    return {"value": _m(e.value), "lo": _m(e.lo), "hi": _m(e.hi)}


def _qname(q: float) -> str:
    return f"p{100 * q:g}"


def to_json(a: Analysis) -> dict[str, Any]:
    """Every figure of the analysis as plain JSON-ready data."""
    sim, ex = a.sim, a.exact
    node_means = sim.node_means()
    tail, complete = sim.tail_means(_TAIL_Q)
    total_mean = sim.mean().value
    tail_total = sum(tail[c] for c in sim.columns[: sim.main_columns])
    amp_mean, amp_p99 = a.amplification()
    nodes = []
    for c, name in enumerate(sim.columns):
        est = node_means[name]
        nodes.append(
            {
                "node": name,
                "top_level": c < sim.main_columns,
                "exact_mean": _m(ex.node_cost[name]) if name in ex.node_cost else None,
                "exact_visits": ex.visits.get(name),
                "mean": _est(est),
                "share": _m(est.value / total_mean) if total_mean else None,
                "tail_mean": _m(tail[name]),
                "tail_share": _m(tail[name] / tail_total) if tail_total else None,
            }
        )
    counters = {}
    for dim in COUNTERS:
        i = DIMS.index(dim)
        h = sim.counters[dim]
        exact = a.counts_exact.get(dim)
        counters[dim] = {
            "exact_mean": _m(ex.mean[i]),
            "exact_sd": _m(ex.sd[i]),
            "sim_mean": _m(h.mean()),
            "sim_max": h.max(),
            "p99": exact.quantile(0.99) if exact else None,
            "p99.9": exact.quantile(0.999) if exact else None,
        }
    wi = a.whatif
    return {
        "workflow": a.name,
        "currency": a.currency,
        "source": a.source,
        "sha256": a.digest,
        "runs": sim.runs,
        "seed": sim.seed,
        "workers": sim.workers,
        "truncation_target": a.caps.truncation,
        "envelope": {n: d.describe() for n, d in zip(a.model.env_names, a.model.env, strict=True)},
        "prices": dict(a.model.price_sources),
        "exact": {
            "mean": {d: _m(v) for d, v in zip(DIMS, ex.mean, strict=True)},
            "sd": {d: _m(v) for d, v in zip(DIMS, ex.sd, strict=True)},
            "p_done": ex.p_done,
            "p_fail": ex.p_fail,
            "elapsed_ms": round(1000 * ex.elapsed_s, 3),
            "cantelli_bound_p999": _m(ex.mean[0] + ex.sd[0] * math.sqrt(999)),
        },
        "simulation": {
            "mean": _est(sim.mean()),
            "sd": _est(sim.sd()),
            "quantiles": {_qname(q): _est(e) for q, e in sim.quantiles().items()},
            "max": _m(sim.max()),
            "runs_per_s": round(sim.rate),
            "outcomes": dict(zip(("done", "fail", "denied"), map(int, sim.states), strict=True)),
        },
        "amplification": {
            "entry_cost": _m(ex.entry_cost),
            "mean": _m(amp_mean),
            "p99": _m(amp_p99),
        },
        "nodes": nodes,
        "tail_quantile": _TAIL_Q,
        "tail_complete": complete,
        "counters": counters,
        "caps": {
            k: {
                "value": c.value,
                "unit": c.unit,
                "rule": c.rule,
                "p_exceed": c.exceed,
                "p_exceed_exact": c.exact_exceed,
                "stopped": c.stopped,
            }
            for k, c in a.caps.caps.items()
        },
        "warnings": list(a.caps.warnings),
        "concurrency": a.caps.concurrency,
        "depth": a.caps.depth,
        "daily_cost": _m(a.caps.daily_cost) if a.caps.daily_cost is not None else None,
        "daily_tail_scenario": (
            _m(a.caps.daily_tail_scenario) if a.caps.daily_tail_scenario is not None else None
        ),
        "runs_per_day": a.caps.runs_per_day,
        "worst_case": {
            "structural": _m(a.worst.structural),
            "guaranteed": _m(a.worst.guaranteed),
            "binding": a.worst.binding,
        },
        "what_if": {
            "mean": _est(wi.mean()),
            "quantiles": {_qname(q): _est(e) for q, e in wi.quantiles().items()},
            "max": _m(wi.max()),
            "truncated": wi.truncation_rate,
            "stopped_by": wi.denied_rates(),
            "clamped": wi.clamped / wi.runs,
            "spend_removed_per_run": _m(sim.mean().value - wi.mean().value),
        },
        "sensitivity": [
            {
                "parameter": s.parameter,
                "value": s.value,
                "derivative": _m(s.derivative),
                "elasticity": round(s.elasticity, 6),
            }
            for s in a.sensitivity
        ],
        "checks": [
            {
                "quantity": c.quantity,
                "exact": c.exact,
                "simulated": c.simulated,
                "lo": c.lo,
                "hi": c.hi,
                "agrees": c.agrees,
            }
            for c in a.checks
        ],
        "timings_s": {k: round(v, 4) for k, v in a.timings.items()},
    }


# -- terminal ------------------------------------------------------------------------
def _fmt(x: float | None, cur: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "∞" if x is not None and x > 0 else "—"
    s = f"{x:.4g}"
    return f"{s} {cur}".rstrip()


def _pct(p: float | None) -> str:
    if p is None:
        return "—"
    if p == 0:
        return "0"
    return f"{100 * p:.3g}%" if p >= 1e-4 else f"{p:.1e}"


def _ci(e: Estimate) -> str:
    return f"{e.value:.4g} [{e.lo:.4g}, {e.hi:.4g}]"


def render(a: Analysis, console: Console) -> None:
    """Print the report of ``a``."""
    cur = a.currency
    sim, ex = a.sim, a.exact
    head = (
        f"[b]{a.name}[/b] — {a.source or 'in-memory graph'}\n"
        f"{sim.runs:,} runs per simulation, seed {sim.seed}, {sim.workers} process(es), "
        f"{sim.rate:,.0f} runs/s; exact solve {1000 * ex.elapsed_s:.2f} ms; money in {cur}"
    )
    console.print(Panel(head, title="execbudget model", box=box.ROUNDED))

    cost = Table(title="Run cost", box=box.SIMPLE_HEAD)
    cost.add_column("")
    cost.add_column("exact", justify="right")
    cost.add_column(f"simulated [{100 * sim.confidence:g}% CI]", justify="right")
    cost.add_column("with caps", justify="right")
    cost.add_row("mean", _fmt(ex.mean[0]), _ci(sim.mean()), _ci(a.whatif.mean()))
    cost.add_row("sd", _fmt(ex.sd[0]), _ci(sim.sd()), _ci(a.whatif.sd()))
    wq = a.whatif.quantiles()
    for q, e in sim.quantiles().items():
        cost.add_row(_qname(q), "", _ci(e), _ci(wq[q]))
    cost.add_row("max", "", _fmt(sim.max()), _fmt(a.whatif.max()))
    amp_mean, amp_p99 = a.amplification()
    cost.add_row("amplification", f"{amp_mean:.3g}× mean", f"{amp_p99:.3g}× at p99", "")
    console.print(cost)

    nodes = Table(
        title=f"Cost per node (tail: runs at or above p{100 * _TAIL_Q:g})", box=box.SIMPLE_HEAD
    )
    for col in ("node", "visits", "mean", "share", "tail mean", "tail share"):
        nodes.add_column(col, justify="left" if col == "node" else "right")
    means = sim.node_means()
    tail, complete = sim.tail_means(_TAIL_Q)
    total = sim.mean().value
    tail_total = sum(tail[c] for c in sim.columns[: sim.main_columns])
    for c, name in enumerate(sim.columns):
        top = c < sim.main_columns
        label = name if top else f"  {name}"
        nodes.add_row(
            label,
            f"{ex.visits[name]:.3g}" if name in ex.visits else "",
            _fmt(means[name].value),
            _pct(means[name].value / total) if total and top else "",
            _fmt(tail[name]),
            _pct(tail[name] / tail_total) if tail_total and top else "",
        )
    console.print(nodes)
    if not complete:
        console.print(
            "[yellow]tail rows were not all kept (chunks too small); tail means are partial"
        )

    caps = Table(
        title=f"Derived caps (target: each stops at most {_pct(a.caps.truncation)} of runs)",
        box=box.SIMPLE_HEAD,
    )
    for col in ("cap", "value", "P(exceed) uncapped", "exact", "stopped in what-if", "rule"):
        caps.add_column(col, justify="left" if col in ("cap", "rule") else "right")
    for key, cap in a.caps.caps.items():
        value = _fmt(cap.value, cur) if cap.unit == "money" else f"{cap.value:,.0f}"
        caps.add_row(
            key, value, _pct(cap.exceed), _pct(cap.exact_exceed), _pct(cap.stopped), cap.rule
        )
    if a.caps.concurrency is not None:
        caps.add_row("concurrency", str(a.caps.concurrency), "", "", "", "structural")
    if a.caps.depth is not None:
        caps.add_row("depth", str(a.caps.depth), "", "", "", "structural")
    if a.caps.daily_cost is not None:
        caps.add_row(
            "workflow cost/day",
            _fmt(a.caps.daily_cost, cur),
            "",
            "",
            "",
            f"{a.caps.runs_per_day}/day: V·μ + 3.09σ√V "
            f"(tail scenario {_fmt(a.caps.daily_tail_scenario, cur)})",
        )
    console.print(caps)
    for warning in a.caps.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)

    wi = a.whatif
    stops = ", ".join(f"{k} {_pct(v)}" for k, v in wi.denied_rates().items()) or "none"
    lines = [
        f"What-if with every cap: {_pct(wi.truncation_rate)} of runs truncated "
        f"(stopped by: {stops}; output clamped in {_pct(wi.clamped / wi.runs)}); spend removed "
        f"{_fmt(sim.mean().value - wi.mean().value, cur)} per run.",
        f"Guaranteed worst case of a run: {_fmt(a.worst.guaranteed, cur)} "
        f"(bound by {a.worst.binding}; longest walk within the count and per-call caps: "
        f"{_fmt(a.worst.structural, cur)}).",
    ]
    console.print(Panel(Group(*lines), title="Enforcement", box=box.ROUNDED))

    if a.sensitivity:
        sens = Table(title="Sensitivity of the expected cost", box=box.SIMPLE_HEAD)
        for col in ("probability", "value", "dE/dp", "elasticity"):
            sens.add_column(col, justify="left" if col == "probability" else "right")
        for s in a.sensitivity[:8]:
            sens.add_row(
                s.parameter, f"{s.value:.4g}", _fmt(s.derivative, cur), f"{s.elasticity:+.3f}"
            )
        console.print(sens)

    bad = [check for check in a.checks if not check.agrees]
    if bad:
        for check in bad:
            console.print(
                f"[red]exact {check.quantity} {check.exact:.6g} outside the simulated interval "
                f"[{check.lo:.6g}, {check.hi:.6g}]"
            )
    else:
        console.print(
            f"[green]exact and simulated agree[/green] on {len(a.checks)} quantities "
            f"({', '.join(c.quantity for c in a.checks)})"
        )


__all__ = ["render", "to_json"]
