"""Shared benchmark plumbing: the 4-line hot-org chain, percentiles, machine facts."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from execbudget.ledger import LineKey, LineRequest

BIG = 10**15


def hot_chain(worker: int, amount: int = 7, prefix: str = "") -> list[LineRequest]:
    """org (shared by every worker) → team → run → agent, one cost line each."""
    return [
        LineRequest(LineKey(f"{prefix}org:bench", "total", "cost"), BIG, amount),
        LineRequest(LineKey(f"{prefix}team:t{worker % 2}", "total", "cost"), BIG, amount),
        LineRequest(LineKey(f"{prefix}run:r{worker}", "total", "cost"), BIG, amount),
        LineRequest(LineKey(f"{prefix}agent:a{worker}", "total", "cost"), BIG, amount),
    ]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


def emit(name: str, **figures: Any) -> dict[str, Any]:
    record = {"bench": name, **figures}
    print(json.dumps(record), flush=True)
    return record


def pair_worker(
    url: str, worker: int, seconds: float, start_at: float, prefix: str, warmup: int
) -> tuple[int, list[float], float]:
    """
    One process of a pairs race: ``warmup`` untimed pairs (connect, load scripts, prepare
    statements), wait for the common start, then reserve+commit on its chain for
    ``seconds``; returns (pairs, reserve latencies, seconds it arrived after the start).
    """
    from execbudget.ledger import Ledger

    ledger = Ledger.from_url(url)
    chain = hot_chain(worker, prefix=prefix)
    for _ in range(warmup):
        ledger.commit(ledger.reserve(chain), {"cost": 5})
    late_s = max(0.0, time.time() - start_at)
    latencies = timed_pairs(ledger, chain, start_at, seconds)
    ledger.close()
    return len(latencies), latencies, late_s


def timed_pairs(
    ledger: Any, chain: list[LineRequest], start_at: float, seconds: float
) -> list[float]:
    """
    Wait for the wall-clock ``start_at``, then reserve+commit on ``chain`` until
    ``start_at + seconds``; the reserve latency of each pair. Every racer stops at the
    same instant: one that started late (slow spawn on a loaded machine) runs a shorter
    window, instead of running part of its window alone and inflating the sum.
    """
    while time.time() < start_at:
        time.sleep(0.001)
    end_at = start_at + seconds
    latencies: list[float] = []
    while time.time() < end_at:
        t0 = time.perf_counter()
        rid = ledger.reserve(chain)
        latencies.append(time.perf_counter() - t0)
        ledger.commit(rid, {"cost": 5})
    return latencies


def race_pairs(
    url: str,
    procs: int,
    seconds: float,
    *,
    start_delay: float,
    warmup: int = 0,
    prefix_of: Callable[[int], str] | None = None,
) -> dict[str, Any]:
    """
    ``procs`` spawned processes racing reserve+commit pairs on the hot chain. The start is
    ``start_delay`` seconds away so every process has imported and connected before the
    clock runs. Returns the figures every ledger benchmark reports.
    """
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + start_delay
    jobs = [
        (url, w, seconds, start_at, prefix_of(w) if prefix_of else "", warmup) for w in range(procs)
    ]
    with ctx.Pool(procs) as pool:
        results = pool.starmap(pair_worker, jobs)
    pairs = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    return {
        "pairs_per_s": round(pairs / seconds),
        "reserve_p50_ms": round(percentile(lat, 0.50) * 1000, 3),
        "reserve_p99_ms": round(percentile(lat, 0.99) * 1000, 3),
        "pairs": pairs,
        # > 0: a worker was still starting when the clock ran; raise start_delay
        "late_start_s": round(max(r[2] for r in results), 3),
    }
