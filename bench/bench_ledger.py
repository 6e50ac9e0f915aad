"""
Ledger throughput: reserve+commit pairs per second on a 4-line chain with one hot org line.

    python -m bench.bench_ledger [--seconds S]

* memory, in-process, one thread (target ≥ 100k pairs/s);
* SQLite WAL ``synchronous=NORMAL``, 4 processes (target ≥ 10k pairs/s, p99 reserve ≤ 1 ms);
* SQLite WAL ``synchronous=FULL``, 4 processes (target ≥ 2.5k pairs/s);
* SQLite ``FULL``, 4 processes × 8 threads, without and with ``group_commit=1``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from execbudget.ledger import Ledger, MemoryStorage

from ._common import emit, hot_chain, machine, percentile, race_pairs, timed_pairs


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


def sqlite_procs(synchronous: str, procs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}?synchronous={synchronous}"
        Ledger.from_url(url).close()
        # every process imported and connected before the clock starts
        figures = race_pairs(url, procs, seconds, start_delay=3.0)
    return emit(f"ledger.sqlite.{synchronous.lower()}.{procs}procs", **figures)


def _threaded_worker(
    url: str, proc: int, threads: int, seconds: float, start_at: float
) -> tuple[int, list[float]]:
    """One process: ``threads`` threads racing pairs through one shared storage."""
    ledger = Ledger.from_url(url)
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def run(t: int) -> None:
        chain = hot_chain(proc * threads + t)
        ledger.commit(ledger.reserve(chain), {"cost": 5})  # warm: connection, statements
        latencies[t] = timed_pairs(ledger, chain, start_at, seconds)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    ledger.close()
    return sum(map(len, latencies)), [x for lat in latencies for x in lat]


def sqlite_threaded(options: str, procs: int, threads: int, seconds: float) -> dict[str, Any]:
    """
    ``procs`` processes × ``threads`` threads on one file. With ``group_commit=1`` the
    threads of a process share transactions (and, with ``FULL``, fsyncs).
    """
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}?{options}"
        Ledger.from_url(url).close()
        ctx = multiprocessing.get_context("spawn")
        start_at = time.time() + 3.0
        with ctx.Pool(procs) as pool:
            results = pool.starmap(
                _threaded_worker, [(url, p, threads, seconds, start_at) for p in range(procs)]
            )
    pairs = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    tag = options.replace("synchronous=", "").replace("&", ".").replace("=", "").lower()
    return emit(
        f"ledger.sqlite.{tag}.{procs}procs.{threads}threads",
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
        sqlite_threaded("synchronous=FULL", 4, 8, args.seconds),
        sqlite_threaded("synchronous=FULL&group_commit=1", 4, 8, args.seconds),
    ]


if __name__ == "__main__":
    main()
