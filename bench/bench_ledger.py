"""
Ledger throughput: reserve+commit pairs per second on a 4-line chain with one hot org line.

    python -m bench.bench_ledger [--seconds S]

* memory, in-process, one thread (target ≥ 100k pairs/s);
* SQLite WAL ``synchronous=NORMAL``, 4 processes (target ≥ 10k pairs/s, p99 reserve ≤ 1 ms);
* SQLite WAL ``synchronous=FULL``, 4 processes (target ≥ 2.5k pairs/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from execbudget.ledger import Ledger, MemoryStorage

from ._common import emit, hot_chain, machine, race_pairs


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
