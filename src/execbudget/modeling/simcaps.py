"""
Caps inside a simulation: how the runtime's holds stop or clamp simulated work.

The runtime holds the worst case of every action before it starts. In a what-if run the
simulator replays that rule on each sequence of actions (the attempts of a call, the
steps of a loop, the items of a fan-out):

* an action whose *minimum* hold (input cost plus one output token for a model call, the
  whole amount otherwise) does not fit in what is left of a run limit is **denied**, and
  the run stops there (a denial is final, never retried);
* a model call that fits but whose full output would not is **clamped** — ``max_tokens``
  is lowered to what the budget affords, exactly as the runtime does — so the run spends
  up to the limit and is denied at its next paid action.

Per-call caps (input ceiling, output ceiling, per-call cost) are applied by the kernels
before this step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._arrays import BoolArray, FloatArray, Int8Array, IntArray
from .common import CLAMPABLE, N_DIMS


@dataclass(frozen=True)
class SimCaps:
    """Caps for a what-if run: ``run`` limits per dimension (``inf`` = none) and per-call caps."""

    run: FloatArray = field(default_factory=lambda: np.full(N_DIMS, np.inf))
    max_input_tokens: float = math.inf
    max_output_tokens: float = math.inf
    max_cost: float = math.inf
    min_output_tokens: float = 1.0

    @property
    def has_run_limits(self) -> bool:
        return bool(np.any(np.isfinite(self.run)))

    def allowance(self, fixed: FloatArray, out_rate: FloatArray) -> FloatArray:
        """
        The output tokens each model call may produce under the per-call caps: the output
        ceiling, lowered (as the runtime lowers ``max_tokens``) to what ``max_cost``
        affords after the call's fixed hold (input at the hold rate plus any fee). Below
        ``min_output_tokens`` the call is denied.
        """
        allow = np.full(fixed.shape, self.max_output_tokens)
        if math.isfinite(self.max_cost):
            with np.errstate(divide="ignore", invalid="ignore"):
                room = np.where(out_rate > 0, (self.max_cost - fixed) / out_rate, np.inf)
            room = np.where((out_rate <= 0) & (fixed > self.max_cost), -np.inf, room)
            allow = np.minimum(allow, room)
        return np.asarray(allow, dtype=np.float64)


def _tol(x: FloatArray) -> FloatArray:
    return 1e-12 * np.maximum(np.abs(x), 1.0)


def sequence(
    seg: IntArray, use: FloatArray, need: FloatArray, remaining: FloatArray
) -> tuple[BoolArray, FloatArray, Int8Array, BoolArray]:
    """
    Replay holds over actions grouped by visit.

    Args:
        seg: the visit of each action, ascending (actions of a visit are contiguous and
            in execution order).
        use: what each action consumes, shape ``(T, N_DIMS)``.
        need: the smallest hold that lets each action start (``use`` for hard dimensions).
        remaining: what is left of each run limit for each visit, ``(n, N_DIMS)``.

    Returns:
        ``keep`` (actions that ran), ``use`` with clamped actions reduced to what was
        left, for each visit the dimension that denied it (``-1`` if none), and whether
        one of its actions was clamped by a run limit.
    """
    n = remaining.shape[0]
    t = seg.shape[0]
    denied = np.full(n, -1, dtype=np.int8)
    was_clamped = np.zeros(n, dtype=bool)
    if t == 0:
        return np.zeros(0, dtype=bool), use, denied, was_clamped
    starts = np.searchsorted(seg, np.arange(n), side="left")
    ends = np.searchsorted(seg, np.arange(n), side="right")
    cum = np.cumsum(use, axis=0)
    before_seg = np.where(starts > 0, 1, 0)[:, None] * cum[np.maximum(starts - 1, 0)]
    before = cum - use - before_seg[seg]
    rem = remaining[seg]
    deny_d = before + need > rem + _tol(rem)
    over_d = before + use > rem + _tol(rem)
    soft = np.array(CLAMPABLE, dtype=np.int64)
    deny: BoolArray = np.asarray(deny_d.any(axis=1), dtype=bool)
    hard = np.ones(N_DIMS, dtype=bool)
    hard[soft] = False
    clamp: BoolArray = np.asarray(
        over_d[:, soft].any(axis=1) & ~deny & ~over_d[:, hard].any(axis=1), dtype=bool
    )
    event = deny | clamp
    pos = np.where(event, np.arange(t), t)
    has = ends > starts
    first = np.full(n, t)
    first[has] = np.minimum.reduceat(pos, starts[has])
    idx = np.arange(t)
    first_t = first[seg]
    keep = (idx < first_t) | ((idx == first_t) & clamp)
    use = use.copy()
    clamped = np.flatnonzero((idx == first_t) & clamp)
    if clamped.size:
        room = np.maximum(rem[clamped][:, soft] - before[clamped][:, soft], 0.0)
        use[np.ix_(clamped, soft)] = np.minimum(use[np.ix_(clamped, soft)], room)
        was_clamped[seg[clamped]] = True
    hit = first < t
    if np.any(hit):
        v = np.flatnonzero(hit)
        at = first[v]
        reason = np.where(deny[at][:, None], deny_d[at], over_d[at])
        last = ends[v] - 1
        stops = deny[at] | (at < last)
        denied[v[stops]] = np.argmax(reason[stops], axis=1).astype(np.int8)
    return keep, use, denied, was_clamped


__all__ = ["SimCaps", "sequence"]
