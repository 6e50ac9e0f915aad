"""
Ledger throughput: reserve+commit pairs per second on a 4-line chain with one hot org line.

    python -m bench.bench_ledger [--seconds S]

* memory, in-process, one thread (target ≥ 100k pairs/s);
* SQLite WAL ``synchronous=NORMAL``, 4 processes (target ≥ 10k pairs/s, p99 reserve ≤ 1 ms);
* SQLite WAL ``synchronous=FULL``, 4 processes (target ≥ 2.5k pairs/s).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from execbudget.ledger import Ledger, MemoryStorage

from ._common import emit, hot_chain, machine, percentile


def memory_single_thread(seconds: float) -> dict[str, Any]:
    """
    Wall-clock pairs/s, and pairs per CPU-second of this thread (``cpu_pairs_per_s``): on a
    shared machine the second is the per-core figure, the first depends on the load.
    """
    ledger = Ledger(MemoryStorage())
    chains = [hot_chain(w) for w in range(8)]
    pairs = 0
    start = time.perf_counter()
    cpu_start = time.thread_time()
    deadline = start + seconds
    while True:
        for i in range(1000):
            rid = ledger.reserve(chains[i & 7])
            ledger.commit(rid, {"cost": 5})
        pairs += 1000
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    return emit(
        "ledger.memory.1thread",
        pairs_per_s=round(pairs / elapsed),
        cpu_pairs_per_s=round(pairs / cpu),
        pairs=pairs,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


def _sqlite_worker(
    url: str, worker: int, seconds: float, start_at: float
) -> tuple[int, list[float]]:
    ledger = Ledger.from_url(url)
    chain = hot_chain(worker)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    pairs = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        rid = ledger.reserve(chain)
        latencies.append(time.perf_counter() - t0)
        ledger.commit(rid, {"cost": 5})
        pairs += 1
    ledger.close()
    return pairs, latencies


def sqlite_procs(synchronous: str, procs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}?synchronous={synchronous}"
        Ledger.from_url(url).close()
        ctx = multiprocessing.get_context("spawn")
        start_at = time.time() + 1.5  # every process imported and connected before the clock
        with ctx.Pool(procs) as pool:
            results = pool.starmap(
                _sqlite_worker, [(url, w, seconds, start_at) for w in range(procs)]
            )
    pairs = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    return emit(
        f"ledger.sqlite.{synchronous.lower()}.{procs}procs",
        pairs_per_s=round(pairs / seconds),
        reserve_p50_ms=round(percentile(lat, 0.50) * 1000, 3),
        reserve_p99_ms=round(percentile(lat, 0.99) * 1000, 3),
        pairs=pairs,
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    emit("machine", **machine())
    return [
        memory_single_thread(args.seconds),
        sqlite_procs("NORMAL", 4, args.seconds),
        sqlite_procs("FULL", 4, args.seconds),
    ]


if __name__ == "__main__":
    main()
