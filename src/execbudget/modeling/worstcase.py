"""
The guaranteed worst case of a run under caps: a longest walk on the capped graph.

Probabilities play no part here. Every model call costs at most its hold under the
per-call caps (input ceiling at the dearest input rate of the highest tier it can reach,
plus the output ceiling at the output rate, never more than ``per_call.max_cost``); a run
makes at most ``calls`` model calls and ``tool_calls`` tool calls; a call is attempted at
most ``1 + retries`` times; a loop runs at most ``steps`` steps; a fan-out starts at most
``fan_out`` items. The most expensive walk through the graph within those budgets is found
by dynamic programming over the remaining budget (model calls and tool calls separately,
so the bound is their sum), and the run cost cap bounds it again: with holds taken
before every action, spend never passes the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._arrays import FloatArray
from .caps import CapSet
from .compiled import CompiledGraph, CompiledModel
from .kernel_call import CallKernel
from .kernel_fanout import FanOutKernel
from .kernel_loop import LoopKernel

_MAX_BUDGET = 5000


@dataclass(frozen=True)
class WorstCase:
    """The deterministic ceiling of one run's cost under the caps."""

    structural: float  # longest walk within the count and per-call caps (inf: unbounded)
    guaranteed: float  # min(structural, run cost cap)
    binding: str  # which bound is the guarantee


@dataclass(frozen=True)
class _Limits:
    calls: int
    tool_calls: int
    retries: float
    steps: float
    fan_out: float
    max_input: float
    max_output: float
    max_cost: float


def _maxplus_power(g: FloatArray, k: int) -> FloatArray:
    """The most ``k`` items can cost sharing a budget (``g[0] = 0``: an item may do nothing)."""
    size = g.shape[0]
    out = np.zeros_like(g)
    base = g.copy()
    while k > 0:
        if k & 1:
            out = _conv(out, base, size)
        base = _conv(base, base, size)
        k >>= 1
    return out


def _conv(a: FloatArray, b: FloatArray, size: int) -> FloatArray:
    """Max-plus convolution truncated to ``size``: ``c[t] = max_s a[s] + b[t-s]``."""
    c = np.full(size, -np.inf)
    for s in range(size):
        c[s:] = np.maximum(c[s:], a[s] + b[: size - s])
    return c


def _best(graph: CompiledGraph, model: CompiledModel, lim: _Limits, tools: bool) -> FloatArray:
    """``best[i, c]``: the most the walk from node ``i`` can cost with budget ``c`` left."""
    budget = lim.tool_calls if tools else lim.calls
    size = budget + 1
    n = graph.n
    env_up = model.env_upper()
    best = np.zeros((n, size))
    per_visit: list[tuple[float, int]] = []  # (weight per unit, most units per visit)
    subs: dict[int, FloatArray] = {}
    for i, k in enumerate(graph.kernels):
        if isinstance(k, CallKernel):
            attempts = int(min(k.retry.r, lim.retries)) + 1
            if k.tool != tools:
                per_visit.append((0.0, 0))
            elif tools:
                per_visit.append((k.flat.upper() if k.flat is not None else 0.0, attempts))
            else:
                w = k.worst_attempt(lim.max_input, lim.max_output, lim.max_cost, env_up)
                per_visit.append((w, attempts))
        elif isinstance(k, LoopKernel):
            steps = min(lim.steps, k.max_steps or math.inf)
            if tools:
                units = steps * k.n_tools
                per_visit.append((k.tool_cost.upper() if k.n_tools else 0.0, _units(units, budget)))
            else:
                attempts = int(min(k.retry.r, lim.retries)) + 1
                w = k.worst_attempt(lim.max_input, lim.max_output, lim.max_cost, env_up, steps)
                per_visit.append((w, _units(steps * attempts, budget)))
        else:
            assert isinstance(k, FanOutKernel)
            item = _best(k.item, model, lim, tools)[k.item.entry]
            items = int(min(lim.fan_out, k.count.upper(env_up), budget if budget else 0))
            subs[i] = _maxplus_power(item, max(items, 0)) if items > 0 else np.zeros(size)
            per_visit.append((0.0, 0))
    succ = [
        [
            int(t)
            for t, col in zip(graph.targets[i], graph.probs[i].T, strict=True)
            if np.any(col > 0)
        ]
        for i in range(n)
    ]
    # budgets in increasing order: a visit that spends x >= 1 units reads smaller budgets;
    # tool-only (or item-free) nodes read the same budget, so passes repeat until stable
    for c in range(size):
        for _ in range(n + 1):
            changed = False
            for i in range(n):
                after = np.zeros(c + 1)
                for t in succ[i]:
                    if t >= 0:
                        after = np.maximum(after, best[t, : c + 1])
                w, units = per_visit[i]
                if i in subs:
                    value = float(np.max(subs[i][: c + 1][::-1] + after))
                elif units <= 0:
                    value = float(after[c])
                else:
                    xs = np.arange(1, min(units, c) + 1)
                    value = float(np.max(xs * w + after[c - xs])) if xs.size else 0.0
                    value = max(value, 0.0)
                if value != best[i, c]:
                    best[i, c] = value
                    changed = True
            if not changed:
                break
    return best


def _units(x: float, budget: int) -> int:
    return int(min(x, budget)) if math.isfinite(x) else budget


def worst_case(model: CompiledModel, caps: CapSet) -> WorstCase:
    """The guaranteed ceiling of a run's cost under ``caps`` (see the module docstring)."""
    inf = math.inf

    def get(key: str) -> float:
        v = caps.value(key)
        return inf if v is None else v

    calls, tools = get("calls"), get("tool_calls")
    lim = _Limits(
        calls=int(min(calls, _MAX_BUDGET)) if math.isfinite(calls) else 0,
        tool_calls=int(min(tools, _MAX_BUDGET)) if math.isfinite(tools) else 0,
        retries=get("retries") if math.isfinite(get("retries")) else 0.0,
        steps=get("steps"),
        fan_out=get("fan_out") if math.isfinite(get("fan_out")) else 0.0,
        max_input=get("per_call.max_input_tokens"),
        max_output=get("per_call.max_output_tokens"),
        max_cost=get("per_call.max_cost"),
    )
    unbounded = (not math.isfinite(calls) and _uses(model.graph, tools=False)) or (
        not math.isfinite(tools) and _uses(model.graph, tools=True)
    )
    if unbounded:
        structural = inf
    else:
        structural = float(
            _best(model.graph, model, lim, tools=False)[model.graph.entry, -1]
            + _best(model.graph, model, lim, tools=True)[model.graph.entry, -1]
        )
    cost_cap = get("cost")
    if structural <= cost_cap:
        return WorstCase(structural, structural, "the count and per-call caps (longest walk)")
    return WorstCase(structural, cost_cap, "the run cost cap (holds are taken before spend)")


def _uses(graph: CompiledGraph, *, tools: bool) -> bool:
    for k in graph.kernels:
        if isinstance(k, CallKernel) and k.tool == tools:
            return True
        if isinstance(k, LoopKernel) and (k.n_tools > 0 if tools else True):
            return True
        if isinstance(k, FanOutKernel) and _uses(k.item, tools=tools):
            return True
    return False


__all__ = ["WorstCase", "worst_case"]
