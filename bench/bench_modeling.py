"""
Benchmarks of the cascade cost modeler (issue 7).

Run from the repository root:

    .venv/bin/python bench/bench_modeling.py            # full
    .venv/bin/python bench/bench_modeling.py --quick    # smaller runs
    .venv/bin/python bench/bench_modeling.py --json out.json

What it measures, each as the best of several repetitions (the machine may be shared):

* exact moments (absorbing Markov chains) per example, and for a generated 100-node
  graph — target: under 10 ms for 100 nodes (compilation excluded: it prices and lays
  out the graph once);
* Monte Carlo trajectories per second per example with one and two processes — target:
  at least 1M trajectories per second for the seed graph on 2 cores;
* the transform (FFT) method on the seed graph;
* peak memory of 10M trajectories of the seed graph, in a fresh process — target: within
  500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "modeling"

from execbudget.modeling import (  # noqa: E402
    CompiledModel,
    PriceSpec,
    StaticPricer,
    compile_graph,
    distribution,
    exact_moments,
    graph_from_dict,
    load_graph,
    simulate,
)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def hundred_nodes(seed: int = 7) -> CompiledModel:
    """A 100-node workflow: token-priced calls with retries, tools, forward branches and
    re-validation loops (every tenth node loops back)."""
    import random

    rnd = random.Random(seed)
    nodes: dict[str, Any] = {}
    for i in range(100):
        nxt = f"n{i + 1}" if i < 99 else "done"
        if i % 3 == 0:
            node: dict[str, Any] = {
                "kind": "model",
                "model": "m",
                "input_tokens": {
                    "dist": "lognormal",
                    "median": rnd.randint(500, 5000),
                    "sigma": 0.8,
                },
                "output_tokens": {
                    "dist": "lognormal",
                    "median": rnd.randint(100, 800),
                    "sigma": 0.6,
                },
                "retry": {"p_fail": 0.05, "max_retries": 3},
            }
        else:
            node = {"kind": "tool", "cost": {"dist": "lognormal", "median": 0.001, "sigma": 0.5}}
        if i % 10 == 9:
            node["next"] = [{"to": f"n{i - 5}", "p": 0.2}, {"to": nxt, "p": "rest"}]
        elif i + 2 < 100 and i % 4 == 1:
            node["next"] = [{"to": f"n{i + 2}", "p": 0.3}, {"to": nxt, "p": "rest"}]
        else:
            node["next"] = nxt
        nodes[f"n{i}"] = node
    spec = graph_from_dict({"name": "hundred", "entry": "n0", "nodes": nodes})
    return compile_graph(spec, StaticPricer({"m": PriceSpec(input_per_mtok=3, output_per_mtok=15)}))


_MEMORY_PROBE = """
import resource, sys, time
from execbudget.modeling import compile_graph, load_graph, simulate
model = compile_graph(load_graph(sys.argv[1]))
t0 = time.perf_counter()
sim = simulate(model, int(sys.argv[2]), seed=1, workers=int(sys.argv[3]))
elapsed = time.perf_counter() - t0
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{elapsed} {own} {kids} {sim.mean().value}")
"""


def memory_probe(runs: int, workers: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(EXAMPLES / "seed.yaml"), str(runs), str(workers)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    elapsed, own, kids, mean = map(float, out)
    return {
        "runs": runs,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed),
        "peak_rss_main_mb": round(own),
        "peak_rss_child_mb": round(kids),
        "mean_cost": mean,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and repetitions")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else 3
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "examples": {},
    }
    print(f"# execbudget modeling benchmarks — {results['machine']}, {results['date']}")
    print(f"{'graph':<18}{'exact':>11}{'MC 1 proc':>16}{'MC 2 procs':>16}  runs")
    runs_for = {"seed": 2_000_000, "seed_clean_path": 2_000_000, "seed_retry_path": 2_000_000}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        model = compile_graph(load_graph(path))
        exact_moments(model)
        t_exact = best_of(lambda m=model: exact_moments(m), 5)
        runs = runs_for.get(path.stem, 200_000) // (4 if args.quick else 1)
        simulate(model, 2000, seed=0)
        t1 = best_of(lambda m=model, r=runs: simulate(m, r // 2, seed=1), repeat) * 2
        t2 = best_of(lambda m=model, r=runs: simulate(m, r, seed=1, workers=2), repeat)
        row = {
            "exact_ms": round(1000 * t_exact, 3),
            "mc_runs_per_s_1proc": round(runs / t1),
            "mc_runs_per_s_2procs": round(runs / t2),
            "runs": runs,
        }
        results["examples"][path.stem] = row
        print(
            f"{path.stem:<18}{row['exact_ms']:>9.2f}ms{row['mc_runs_per_s_1proc']:>14,}/s"
            f"{row['mc_runs_per_s_2procs']:>14,}/s  {runs:,}"
        )
    big = hundred_nodes()
    exact_moments(big)
    t_big = best_of(lambda: exact_moments(big), 20)
    results["hundred_nodes_exact_ms"] = round(1000 * t_big, 3)
    print(f"100-node graph: exact moments {1000 * t_big:.2f} ms (target < 10 ms)")
    seed = compile_graph(load_graph(EXAMPLES / "seed.yaml"))
    t_fft = best_of(lambda: distribution(seed, "cost"), repeat)
    results["seed_fft_ms"] = round(1000 * t_fft, 1)
    print(f"seed graph: exact distribution by FFT (2^16 lattice) {1000 * t_fft:.1f} ms")
    total = 2_000_000 if args.quick else 10_000_000
    for workers in (1, 2):
        mem = memory_probe(total, workers)
        results[f"memory_{workers}proc"] = mem
        print(
            f"seed graph, {total:,} trajectories, {workers} process(es): {mem['seconds']:.2f} s "
            f"({mem['runs_per_s']:,}/s), peak RSS {mem['peak_rss_main_mb']:.0f} MB "
            f"(+ {mem['peak_rss_child_mb']:.0f} MB per child)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
