"""Shared benchmark plumbing: the 4-line hot-org chain, percentiles, machine facts."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
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
