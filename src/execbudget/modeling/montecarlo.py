"""
Vectorised Monte Carlo: the full distribution of a run's cost and counters.

Trajectories are numpy rows. The envelope is drawn once per run, so every node that reads
it is correlated exactly as in a real run. The walker follows the graph's strongly
connected components in topological order: a node outside any loop is visited once, by
every trajectory that reaches it, as one array operation; inside a loop the walker keeps
stepping the trajectories still in it. A fan-out draws ``K`` per visit, walks the item
graph for all ``ΣK`` items at once, and folds the results back with ``bincount``.

Runs are simulated in chunks (memory stays bounded whatever ``runs`` is); chunk ``i``
always uses child ``i`` of ``SeedSequence(seed)``, so a result depends only on the seed and
the number of runs, never on the number of processes. With ``caps``, the walker replays
the runtime's holds (see :mod:`~execbudget.modeling.simcaps`) — the what-if.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ._arrays import BoolArray, FloatArray, Int8Array, IntArray
from .common import COST, DENIAL_NAMES, DENIED, DIMS, EXHAUSTED, FAN_OUT, N_DIMS, TOKENS, VisitDraw
from .compiled import DONE, CompiledGraph, CompiledModel
from .kernel_fanout import FanOutKernel
from .mcstats import Estimate, IntHist, LogHist, mean_ci, quantiles_ci, sd_ci
from .simcaps import SimCaps, sequence

RUNNING, S_DONE, S_FAIL, S_DENIED = -1, 0, 1, 2
_MAX_ROUNDS = 100_000
#: Counters kept as exact histograms, and per-run maxima kept on a log grid.
COUNTERS = ("steps", "calls", "retries", "tool_calls", "fan_out")
MAXIMA = ("tokens", "max_input_tokens", "max_output_tokens", "max_hold", "time")
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


@dataclass
class Walk:
    """Per-walker results of walking one graph."""

    use: FloatArray
    max_in: FloatArray
    max_out: FloatArray
    max_hold: FloatArray
    time: FloatArray
    state: Int8Array
    denied: Int8Array
    clamped: BoolArray
    node_cost: FloatArray
    visits: FloatArray
    runaway: int = 0


def walk(
    graph: CompiledGraph,
    rng: np.random.Generator,
    env: FloatArray,
    caps: SimCaps | None = None,
    *,
    limited: bool = True,
) -> Walk:
    """Walk ``len(env)`` trajectories through ``graph``; ``limited`` applies run limits."""
    n = env.shape[0]
    w = Walk(
        use=np.zeros((n, N_DIMS)),
        max_in=np.zeros(n),
        max_out=np.zeros(n),
        max_hold=np.zeros(n),
        time=np.zeros(n),
        state=np.full(n, RUNNING, dtype=np.int8),
        denied=np.full(n, -1, dtype=np.int8),
        clamped=np.zeros(n, dtype=bool),
        node_cost=np.zeros((n, len(graph.columns))),
        visits=np.zeros(graph.n),
    )
    pending: list[list[IntArray]] = [[] for _ in range(graph.n)]
    pending[graph.entry].append(np.arange(n))
    run_limits = limited and caps is not None and caps.has_run_limits
    for members, cyclic in graph.order:
        rounds = 0
        while True:
            progressed = False
            for i in members:
                if not pending[i]:
                    continue
                idx = np.concatenate(pending[i])
                pending[i] = []
                progressed = True
                remaining = caps.run - w.use[idx] if run_limits and caps is not None else None
                draw = _visit(graph, i, rng, env[idx], caps, remaining)
                _record(graph, i, w, idx, draw)
                _route(graph, i, rng, env, w, idx, draw, pending)
            rounds += 1
            if not cyclic or not progressed:
                break
            if rounds > _MAX_ROUNDS:
                for i in members:
                    for stuck in pending[i]:
                        w.state[stuck] = S_FAIL
                        w.runaway += stuck.shape[0]
                    pending[i] = []
                break
    return w


def _visit(
    graph: CompiledGraph,
    i: int,
    rng: np.random.Generator,
    env: FloatArray,
    caps: SimCaps | None,
    remaining: FloatArray | None,
) -> VisitDraw:
    kernel = graph.kernels[i]
    if isinstance(kernel, FanOutKernel):
        return _fan_out(kernel, rng, env, caps, remaining)
    return kernel.sample(rng, env, caps, remaining)


def _record(graph: CompiledGraph, i: int, w: Walk, idx: IntArray, d: VisitDraw) -> None:
    # only what the visit touched: most nodes use two or three dimensions and no maxima
    for dim in np.flatnonzero(d.use.any(axis=0)):
        w.use[idx, dim] += d.use[:, dim]
    for name in ("max_in", "max_out", "max_hold"):
        new = getattr(d, name)
        if new.any():
            old = getattr(w, name)
            old[idx] = np.maximum(old[idx], new)
    if d.time.any():
        w.time[idx] += d.time
    if d.clamped.any():
        w.clamped[idx] |= d.clamped
    w.node_cost[idx, i] += d.use[:, COST]
    off = graph.sub_offset[i]
    if d.sub is not None and off >= 0:
        w.node_cost[idx, off : off + d.sub.shape[1]] += d.sub
    w.visits[i] += idx.shape[0]


def _route(
    graph: CompiledGraph,
    i: int,
    rng: np.random.Generator,
    env: FloatArray,
    w: Walk,
    idx: IntArray,
    d: VisitDraw,
    pending: list[list[IntArray]],
) -> None:
    denied = d.outcome == DENIED
    if np.any(denied):
        w.state[idx[denied]] = S_DENIED
        w.denied[idx[denied]] = d.denied[denied]
    fail = (d.outcome == EXHAUSTED) & (not graph.continues(i))
    w.state[idx[fail]] = S_FAIL
    moving = idx[~denied & ~fail]
    if moving.shape[0] == 0:
        return
    targets = graph.targets[i]
    if targets.shape[0] == 1:
        choice = np.zeros(moving.shape[0], dtype=np.int64)
    else:
        cum = np.cumsum(graph.branch_probs(i, env[moving]), axis=1)
        u = rng.random(moving.shape[0]) * cum[:, -1]
        choice = np.minimum((u[:, None] >= cum).sum(axis=1), targets.shape[0] - 1)
    for ti, t in enumerate(targets):
        sel = moving if targets.shape[0] == 1 else moving[choice == ti]
        if sel.shape[0] == 0:
            continue
        if t >= 0:
            pending[int(t)].append(sel)
        else:
            w.state[sel] = S_DONE if t == DONE else S_FAIL


def _fan_out(
    k: FanOutKernel,
    rng: np.random.Generator,
    env: FloatArray,
    caps: SimCaps | None,
    remaining: FloatArray | None,
) -> VisitDraw:
    n = env.shape[0]
    draw = VisitDraw.empty(n)
    if n == 0:
        draw.sub = np.zeros((0, len(k.item.columns)))
        return draw
    count = np.maximum(np.rint(k.count.sample(rng, env)), 0).astype(np.int64)
    owner = np.repeat(np.arange(n), count)
    items = walk(k.item, rng, env[owner], caps, limited=False)
    use = items.use.copy()
    use[:, FAN_OUT] += 1.0
    keep = np.ones(owner.shape[0], dtype=bool)
    run_denied = np.full(n, -1, dtype=np.int8)
    if remaining is not None and caps is not None and caps.has_run_limits:
        keep, use, run_denied, clamped = sequence(owner, use, use.copy(), remaining)
        draw.clamped |= clamped
    # an item denied by a per-call cap stops the run after that item
    item_denied = keep & (items.state == S_DENIED)
    if np.any(item_denied):
        pos = np.where(item_denied, np.arange(owner.shape[0]), owner.shape[0])
        first = np.full(n, owner.shape[0])
        np.minimum.at(first, owner, pos)
        keep &= np.arange(owner.shape[0]) <= first[owner]
        hit = first < owner.shape[0]
        run_denied[hit] = np.where(run_denied[hit] >= 0, run_denied[hit], items.denied[first[hit]])
    ko = owner[keep]
    for dim in range(N_DIMS):
        draw.use[:, dim] = np.bincount(ko, weights=use[keep, dim], minlength=n)
    draw.sub = np.stack(
        [
            np.bincount(ko, weights=items.node_cost[keep, c], minlength=n)
            for c in range(items.node_cost.shape[1])
        ],
        axis=1,
    )
    for name in ("max_in", "max_out", "max_hold"):
        np.maximum.at(getattr(draw, name), ko, getattr(items, name)[keep])
    draw.clamped |= np.bincount(ko, weights=items.clamped[keep], minlength=n) > 0
    if np.any(items.time):
        total = np.bincount(ko, weights=items.time[keep], minlength=n)
        longest = np.zeros(n)
        np.maximum.at(longest, ko, items.time[keep])
        started = np.bincount(ko, minlength=n).astype(np.float64)
        conc = np.minimum(started, k.max_concurrency or np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(conc > 0, total / conc + (1 - 1 / conc) * longest, 0.0)
        draw.time = bound
    draw.denied = run_denied
    draw.outcome = np.where(run_denied >= 0, DENIED, 0).astype(np.int8)
    return draw


# -- chunks --------------------------------------------------------------------------
@dataclass
class Chunk:
    """Mergeable summary of one chunk of runs."""

    totals: FloatArray
    counters: dict[str, IntHist]
    maxima: dict[str, LogHist]
    node_sum: FloatArray
    node_sumsq: FloatArray
    visits: FloatArray
    tail_rows: FloatArray
    tail_totals: FloatArray
    threshold: float
    states: IntArray
    denied_by: IntArray
    clamped: int
    truncated: int
    runaway: int


def run_chunk(
    model: CompiledModel,
    n: int,
    seed: np.random.SeedSequence,
    caps: SimCaps | None,
    keep_tail: float,
) -> Chunk:
    """Simulate ``n`` runs with their own generator and summarise them."""
    rng = np.random.default_rng(seed)
    env = model.sample_env(rng, n)
    w = walk(model.graph, rng, env, caps)
    totals = w.use[:, COST].copy()
    threshold = -math.inf if n < 5000 else float(np.quantile(totals, 1.0 - keep_tail))
    tail = totals >= threshold
    truncated = (w.state == S_DENIED) | w.clamped
    return Chunk(
        totals=totals,
        counters={c: IntHist.of(w.use[:, DIMS.index(c)]) for c in COUNTERS},
        maxima={
            "tokens": LogHist.of(w.use[:, TOKENS]),
            "max_input_tokens": LogHist.of(w.max_in),
            "max_output_tokens": LogHist.of(w.max_out),
            "max_hold": LogHist.of(w.max_hold),
            "time": LogHist.of(w.time),
        },
        node_sum=w.node_cost.sum(axis=0),
        node_sumsq=(w.node_cost**2).sum(axis=0),
        visits=w.visits,
        tail_rows=w.node_cost[tail].astype(np.float32),
        tail_totals=totals[tail],
        threshold=threshold,
        states=np.bincount(w.state.astype(np.int64) + 1, minlength=4)[1:].astype(np.int64),
        denied_by=np.bincount(
            w.denied[w.denied >= 0].astype(np.int64), minlength=len(DENIAL_NAMES)
        ).astype(np.int64),
        clamped=int(w.clamped.sum()),
        truncated=int(truncated.sum()),
        runaway=w.runaway,
    )


def _run_chunks(
    model: CompiledModel,
    sizes: list[int],
    seeds: list[np.random.SeedSequence],
    caps: SimCaps | None,
    keep_tail: float,
) -> list[Chunk]:
    return [run_chunk(model, n, s, caps, keep_tail) for n, s in zip(sizes, seeds, strict=True)]


@dataclass
class Simulation:
    """The merged result of a Monte Carlo run (see :func:`simulate`)."""

    runs: int
    seed: int
    workers: int
    chunk_size: int
    elapsed_s: float
    caps: SimCaps | None
    columns: tuple[str, ...]
    main_columns: int
    totals: FloatArray
    counters: dict[str, IntHist]
    maxima: dict[str, LogHist]
    node_sum: FloatArray
    node_sumsq: FloatArray
    visits: FloatArray
    tail_rows: FloatArray
    tail_totals: FloatArray
    thresholds: list[float]
    states: IntArray
    denied_by: IntArray
    clamped: int
    truncated: int
    runaway: int
    confidence: float = 0.99
    _quantiles: dict[tuple[float, float], Estimate] = field(default_factory=dict, repr=False)

    @property
    def rate(self) -> float:
        """Trajectories per second."""
        return self.runs / self.elapsed_s if self.elapsed_s > 0 else math.inf

    def mean(self) -> Estimate:
        return mean_ci(self.totals, self.confidence)

    def sd(self) -> Estimate:
        return sd_ci(self.totals, self.confidence)

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> dict[float, Estimate]:
        c = self.confidence
        missing = tuple(q for q in qs if (q, c) not in self._quantiles)
        if missing:
            found = quantiles_ci(self.totals, missing, c)
            self._quantiles.update({(q, c): e for q, e in found.items()})
        return {q: self._quantiles[(q, c)] for q in qs}

    def max(self) -> float:
        return float(self.totals.max())

    def exceed(self, x: float) -> float:
        """``P(run cost > x)`` (sums of float costs get a relative tolerance of 1e-9)."""
        return float((self.totals > x * (1 + 1e-9) + 1e-15).mean())

    def node_means(self) -> dict[str, Estimate]:
        z = 2.5758293035489004 if self.confidence == 0.99 else 1.96
        out = {}
        for c, name in enumerate(self.columns):
            mu = self.node_sum[c] / self.runs
            var = max(self.node_sumsq[c] / self.runs - mu * mu, 0.0)
            half = z * math.sqrt(var / self.runs)
            out[name] = Estimate(float(mu), float(mu - half), float(mu + half))
        return out

    def tail_means(self, q: float = 0.99) -> tuple[dict[str, float], bool]:
        """``E[node cost | run cost >= VaR_q]`` per column, and whether every tail row was
        kept (True unless chunks were too small for the kept fraction)."""
        var_q = self.quantiles((q,))[q].value
        complete = all(var_q >= t for t in self.thresholds)
        rows = self.tail_rows[self.tail_totals >= var_q]
        means = rows.mean(axis=0) if rows.shape[0] else np.zeros(len(self.columns))
        return {name: float(means[c]) for c, name in enumerate(self.columns)}, complete

    @property
    def truncation_rate(self) -> float:
        return self.truncated / self.runs

    def denied_rates(self) -> dict[str, float]:
        return {
            name: float(self.denied_by[i]) / self.runs
            for i, name in enumerate(DENIAL_NAMES)
            if self.denied_by[i]
        }


def _merge(chunks: list[Chunk]) -> dict[str, object]:
    first = chunks[0]
    counters = dict(first.counters)
    maxima = dict(first.maxima)
    for c in chunks[1:]:
        counters = {k: v.merge(c.counters[k]) for k, v in counters.items()}
        maxima = {k: v.merge(c.maxima[k]) for k, v in maxima.items()}
    return {
        "counters": counters,
        "maxima": maxima,
        "node_sum": np.sum([c.node_sum for c in chunks], axis=0),
        "node_sumsq": np.sum([c.node_sumsq for c in chunks], axis=0),
        "visits": np.sum([c.visits for c in chunks], axis=0),
        "tail_rows": np.concatenate([c.tail_rows for c in chunks]),
        "tail_totals": np.concatenate([c.tail_totals for c in chunks]),
        "thresholds": [c.threshold for c in chunks],
        "states": np.sum([c.states for c in chunks], axis=0),
        "denied_by": np.sum([c.denied_by for c in chunks], axis=0),
        "clamped": sum(c.clamped for c in chunks),
        "truncated": sum(c.truncated for c in chunks),
        "runaway": sum(c.runaway for c in chunks),
    }


def work_per_run(model: CompiledModel) -> float:
    """Expected array elements one run creates (visits, steps, attempts, items), from the
    exact engine, so chunks of loop-heavy graphs stay small enough for memory."""
    from .markov import exact_moments

    mom = exact_moments(model, bins=4)

    def mean(dim: str) -> float:
        return float(mom.mean[DIMS.index(dim)])

    # a loop step carries about four times the arrays of a plain visit
    return (
        1.0
        + sum(mom.visits.values())
        + 4.0 * mean("steps")
        + 2.0 * (mean("calls") + mean("tool_calls") + mean("fan_out"))
    )


def default_chunk(model: CompiledModel, runs: int, work: float | None = None) -> int:
    """Chunk size: at most 250k runs, about 8M cells of the per-node cost matrix, and
    about 1.25M array elements of visits, steps, attempts and items (small chunks stay in
    the CPU caches: on the 2-core reference machine 50k-run chunks of the seed graph ran
    twice as fast as 200k-run chunks)."""
    cols = max(len(model.graph.columns), 1)
    work = work_per_run(model) if work is None else work
    size = min(250_000, 8_000_000 // cols, int(1_250_000 / max(work, 1.0)))
    return max(1, min(runs, max(size, 2_000)))


def simulate(
    model: CompiledModel,
    runs: int,
    seed: int = 0,
    *,
    caps: SimCaps | None = None,
    workers: int = 1,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_tail: float = 0.02,
    work: float | None = None,
) -> Simulation:
    """
    Simulate ``runs`` runs of ``model`` (with ``caps``: the what-if under enforcement).

    ``workers=2`` runs chunks in two processes; results are identical to one process.
    ``progress(done, total)`` is called after every chunk. ``work`` is the expected
    elements per run (see :func:`work_per_run`), used to size chunks.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    t0 = time.perf_counter()
    size = chunk_size or default_chunk(model, runs, work)
    n_chunks = math.ceil(runs / size)
    sizes = [size] * (n_chunks - 1) + [runs - size * (n_chunks - 1)]
    seeds = np.random.SeedSequence(seed).spawn(n_chunks)
    chunks: list[Chunk] = []
    totals = np.empty(runs)
    done = 0

    def collect(chunk: Chunk) -> None:
        # keep one array of run totals, not one per chunk plus their concatenation
        nonlocal done
        n = chunk.totals.shape[0]
        totals[done : done + n] = chunk.totals
        chunk.totals = totals[:0]
        chunks.append(chunk)
        done += n
        if progress:
            progress(done, runs)

    if workers > 1 and n_chunks > 1:
        # a few chunks per task: fewer round trips between processes, same chunks and seeds
        per_task = max(1, n_chunks // (4 * workers))
        jobs = [
            (sizes[i : i + per_task], seeds[i : i + per_task]) for i in range(0, n_chunks, per_task)
        ]
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_run_chunks, model, ns, ss, caps, keep_tail) for ns, ss in jobs]
            for fut in futures:
                for chunk in fut.result():
                    collect(chunk)
    else:
        for n, s in zip(sizes, seeds, strict=True):
            collect(run_chunk(model, n, s, caps, keep_tail))
    merged = _merge(chunks)
    return Simulation(
        runs=runs,
        seed=seed,
        workers=workers,
        chunk_size=size,
        elapsed_s=time.perf_counter() - t0,
        caps=caps,
        columns=model.graph.columns,
        main_columns=model.graph.n,
        totals=totals,
        **merged,  # type: ignore[arg-type]
    )


__all__ = ["COUNTERS", "MAXIMA", "QUANTILES", "Simulation", "Walk", "run_chunk", "simulate", "walk"]
