"""
Slices: local reserve+commit pairs per second on one core, and how many calls reach the
shared store, on the 4-line hot-org chain.

    python -m bench.bench_slices [--seconds S] [--redis-url URL]

* ``slices.memory.1thread``: a SlicedStorage over a MemoryStorage, one thread, through
  the ``Ledger`` facade (target ≥ 300k local pairs/s per core);
* ``slices.redis.1thread``: the same node over Redis (``--redis-url``, a private or test
  server; keys under ``?prefix=bench-slices:``, deleted afterwards).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from execbudget.ledger import Ledger, MemoryStorage, Storage, make_storage
from execbudget.ledger.slices import SlicedStorage

from ._common import emit, hot_chain, machine


def local_pairs(name: str, base: Storage, seconds: float) -> dict[str, Any]:
    node = SlicedStorage(base, calls_per_slice=1024)
    ledger = Ledger(node)
    chains = [hot_chain(w) for w in range(8)]
    for chain in chains:  # first leases outside the clock
        ledger.commit(ledger.reserve(chain), {"cost": 5})
    calls_before = node.base_calls
    pairs = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(1000):
            rid = ledger.reserve(chains[i & 7])
            ledger.commit(rid, {"cost": 5})
        pairs += 1000
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    shared_calls = node.base_calls - calls_before
    ledger.close()
    return emit(
        name,
        pairs_per_s=round(pairs / elapsed),
        us_per_pair=round(elapsed / pairs * 1e6, 2),
        pairs=pairs,
        shared_store_calls=shared_calls,
        local_pairs_per_shared_call=round(pairs / max(1, shared_calls)),
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args(argv)
    emit("machine", **machine())
    results = [local_pairs("slices.memory.1thread", MemoryStorage(), args.seconds)]
    if args.redis_url:
        sep = "&" if "?" in args.redis_url else "?"
        url = f"{args.redis_url}{sep}prefix=bench-slices:"
        results.append(local_pairs("slices.redis.1thread", make_storage(url), args.seconds))
        import redis

        with redis.Redis.from_url(args.redis_url) as client:
            names = list(client.scan_iter(match="{bench-slices:}*"))
            if names:
                client.delete(*names)
    return results


if __name__ == "__main__":
    main()
