"""
Writing the derived caps as a policy file the runtime loads unchanged.

Two scopes: ``run:<name>`` (each run: every derived run limit and the per-call caps) and,
when a daily run volume is known, ``workflow:<name>`` (all runs together, per day). The
header comment records what the caps were derived from (graph digest, envelope, prices,
runs, seed) and every line carries the truncation rate its cap implies, so a reader can
re-derive or challenge each number.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import yaml

from .analysis import Analysis
from .caps import DerivedCap

#: Run limits in the order they are written.
_RUN_KEYS = ("cost", "tokens", "steps", "calls", "retries", "tool_calls", "fan_out", "time")
_CALL_KEYS = ("max_input_tokens", "max_output_tokens", "max_cost")


def money(value: float, currency: str = "USD") -> str:
    """``"0.50 USD"``: at least two decimals, enough to show two significant digits, and
    never below ``value`` (rounded up)."""
    places = 2 if value >= 1 or value <= 0 else max(2, -math.floor(math.log10(value)) + 1)
    q = Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_CEILING)
    return f"{q:f} {currency}"


def _rate(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0:
        return "0%"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{100 * p:.3g}%"


def _comment(cap: DerivedCap) -> str:
    parts = [
        "not replayed in the what-if"
        if cap.stopped is None
        else f"stops {_rate(cap.stopped)} of runs in the what-if"
    ]
    if cap.exact_exceed is not None:
        parts.append(f"P(exceed) {_rate(cap.exact_exceed)} exact")
    elif cap.exceed is not None:
        parts.append(f"P(exceed) {_rate(cap.exceed)} uncapped")
    return "; ".join(parts)


def _value(cap: DerivedCap, currency: str) -> str:
    if cap.unit == "money":
        return f'"{money(cap.value, currency)}"'
    if cap.unit == "seconds":
        return f'"{int(cap.value)}s"'
    return str(int(cap.value))


def _header(a: Analysis) -> list[str]:
    m = a.model
    spec = m.spec
    q = a.sim.quantiles()
    cur = a.currency
    again = (
        f"execbudget model {a.source} --runs {a.sim.runs} --seed {a.sim.seed} --emit-policy FILE"
        if a.source
        else "execbudget.modeling.analyze(...)"
    )
    lines = [
        f"execbudget policy derived by the cascade cost model for workflow {spec.name!r}.",
        f"Regenerate rather than edit: {again}",
        f"graph: {a.source or '<in memory>'} (sha256 {a.digest[:16]})",
    ]
    for name, dist in zip(m.env_names, m.env, strict=True):
        lines.append(f"envelope: {name} ~ {dist.describe()}")
    by_source: dict[str, list[str]] = {}
    for node, src in sorted(m.price_sources.items()):
        by_source.setdefault(src, []).append(node)
    for src, nodes in by_source.items():
        lines.append(f"prices: {src}: {', '.join(nodes)}")
    lines += [
        f"runs: {a.sim.runs} per simulation (uncapped, capped, what-if), seed {a.sim.seed}, "
        f"truncation target {_rate(a.caps.truncation)} per cap",
        f"run cost, exact: mean {a.exact.mean[0]:.6g} {cur}, sd {a.exact.sd[0]:.6g} {cur}",
        "run cost, simulated: "
        + ", ".join(f"p{100 * k:g} {v.value:.6g}" for k, v in q.items())
        + f", max {a.sim.max():.6g} {cur}",
        f"what-if with every cap: {_rate(a.whatif.truncation_rate)} of runs truncated, mean "
        f"{a.whatif.mean().value:.6g} {cur} (uncapped {a.sim.mean().value:.6g})",
        f"guaranteed worst case of a run under these caps: {a.worst.guaranteed:.6g} {cur} "
        f"(bound by {a.worst.binding})",
    ]
    lines += [f"warning: {w}" for w in a.caps.warnings]
    return [f"# {line}" for line in lines]


def policy_text(a: Analysis) -> str:
    """The policy YAML for ``a`` (see the module docstring)."""
    cur = a.currency
    caps = a.caps
    name = a.name
    out = [*_header(a), "version: 1", f"currency: {cur}", "scopes:"]
    if caps.daily_cost is not None and caps.runs_per_day:
        out += [
            f'  - match: "workflow:{name}"',
            "    limits:",
            f'      cost: {{day: "{money(caps.daily_cost, cur)}"}}'
            f"  # {caps.runs_per_day} runs/day × capped mean + 3.09·σ·√runs",
        ]
    out += [f'  - match: "run:{name}"', "    limits:"]
    width = 30
    for key in _RUN_KEYS:
        cap = caps.caps.get(key)
        if cap is None:
            continue
        text = f"      {key}: {_value(cap, cur)}"
        out.append(f"{text:<{width}}  # {_comment(cap)}")
    if caps.concurrency is not None:
        out.append(f"{'      concurrency: ' + str(caps.concurrency):<{width}}  # structural")
    if caps.depth is not None:
        depth = f"      depth: {caps.depth}"
        out.append(f"{depth:<{width}}  # structural: this run + sub-agent levels")
    per_call = [(k, caps.caps.get(f"per_call.{k}")) for k in _CALL_KEYS]
    if any(c is not None for _, c in per_call):
        out.append("    per_call:")
        for key, cap in per_call:
            if cap is None:
                continue
            text = f"      {key}: {_value(cap, cur)}"
            out.append(f"{text:<{width}}  # {_comment(cap)}")
    text = "\n".join(out) + "\n"
    yaml.safe_load(text)  # never write something that is not YAML
    return text


def write_policy(a: Analysis, path: str | Path) -> Path:
    """Write the policy of ``a`` to ``path`` and return the path."""
    path = Path(path)
    path.write_text(policy_text(a), encoding="utf-8")
    return path


__all__ = ["money", "policy_text", "write_policy"]
