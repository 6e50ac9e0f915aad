"""
Slices: local reserve+commit pairs per second on one core, and how many calls reach the
shared store, on the 4-line hot-org chain.

    python -m bench.bench_slices [--seconds S] [--redis-url URL]

Two ways in, each measured (target ≥ 300k local pairs/s per core, issue 5):

* ``slices.memory.1thread``: a SlicedStorage over a MemoryStorage, one thread, through
  the ``Ledger`` facade (``LineRequest`` lists validated on every call);
* ``slices.memory.1thread.localchain``: the same node through ``node.chain(lines)``
  handles, ``reserve(amount)`` / ``commit(rid, actual)`` (the fast local path);
* ``slices.redis.*``: the same two over Redis (``--redis-url``, a private or test
  server; keys under ``?prefix=bench-slices:``, deleted afterwards).

Each reports wall-clock ``pairs_per_s`` and ``cpu_pairs_per_s`` (pairs per CPU-second of
the benchmark thread, i.e. per core; on a loaded machine the wall figure also measures
the other processes) with the 1-minute load average. Refills and reports happen inside
the timed loop, as in production.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from execbudget.ledger import Ledger, MemoryStorage, Storage, make_storage
from execbudget.ledger.slices import SlicedStorage

from ._common import emit, hot_chain, machine


def _timed(
    name: str, node: SlicedStorage, pair: Callable[[int], None], seconds: float
) -> dict[str, Any]:
    calls_before = node.base_calls
    pairs = 0
    start = time.perf_counter()
    cpu_start = time.thread_time()
    deadline = start + seconds
    while True:
        for i in range(1000):
            pair(i)
        pairs += 1000
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    shared_calls = node.base_calls - calls_before
    node.close()
    return emit(
        name,
        pairs_per_s=round(pairs / elapsed),
        cpu_pairs_per_s=round(pairs / cpu),
        us_per_pair=round(elapsed / pairs * 1e6, 2),
        cpu_us_per_pair=round(cpu / pairs * 1e6, 2),
        pairs=pairs,
        shared_store_calls=shared_calls,
        local_pairs_per_shared_call=round(pairs / max(1, shared_calls)),
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


def local_pairs(name: str, base: Storage, seconds: float) -> dict[str, Any]:
    """Through the ``Ledger`` facade: what existing callers of ``Ledger(node)`` get."""
    node = SlicedStorage(base, calls_per_slice=1024)
    ledger = Ledger(node)
    chains = [hot_chain(w) for w in range(8)]
    for chain in chains:  # first leases outside the clock
        ledger.commit(ledger.reserve(chain), {"cost": 5})

    def pair(i: int) -> None:
        rid = ledger.reserve(chains[i & 7])
        ledger.commit(rid, {"cost": 5})

    return _timed(name, node, pair, seconds)


def local_chain_pairs(name: str, base: Storage, seconds: float) -> dict[str, Any]:
    """Through ``LocalChain`` handles: the fast local path, same chains, same amounts."""
    node = SlicedStorage(base, calls_per_slice=1024)
    handles = [node.chain(hot_chain(w)) for w in range(8)]
    for handle in handles:  # first leases outside the clock
        handle.commit(handle.reserve(7), 5)

    def pair(i: int) -> None:
        handle = handles[i & 7]
        handle.commit(handle.reserve(7), 5)

    return _timed(name, node, pair, seconds)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args(argv)
    emit("machine", **machine())
    results = [
        local_pairs("slices.memory.1thread", MemoryStorage(), args.seconds),
        local_chain_pairs("slices.memory.1thread.localchain", MemoryStorage(), args.seconds),
    ]
    if args.redis_url:
        sep = "&" if "?" in args.redis_url else "?"
        url = f"{args.redis_url}{sep}prefix=bench-slices:"
        results.append(local_pairs("slices.redis.1thread", make_storage(url), args.seconds))
        results.append(
            local_chain_pairs("slices.redis.1thread.localchain", make_storage(url), args.seconds)
        )
        import redis

        with redis.Redis.from_url(args.redis_url) as client:
            names = list(client.scan_iter(match="{bench-slices:}*"))
            if names:
                client.delete(*names)
    return results


if __name__ == "__main__":
    main()
