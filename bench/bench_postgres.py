"""
PostgreSQL ledger throughput: reserve+commit pairs per second and reserve latency on a
4-line chain with one hot org line, N processes with one connection each, against the
shared server (a fresh schema per run, dropped after; nothing else is touched).

    python -m bench.bench_postgres [--url URL] [--seconds S] [--procs 4 8 16]
                                   [--sync on off] [--chain hot cold] [--pgbench]

Targets (issue 5 / ledger.md §8, 2-core machine): hot org with ``synchronous_commit=on``
≥ 1.2k pairs/s and not below 0.8k at 16 connections; ``off`` ≥ 3k. ``--chain cold`` gives
every process its own chain (no shared row) for comparison.

Every hot-row transaction holds the org row's lock through its commit, WAL flush
included, so with ``synchronous_commit=on`` the ceiling is about 1 / (2 × commit latency)
pairs/s whatever the connection count. The first record, ``commit_baseline``, measures
that commit latency on this machine (one connection, single-row UPDATE, autocommit), so
figures from machines with different disks can be compared. ``--pgbench`` also drives
the same two functions from pgbench (C client, prepared statements), which separates the
server's ceiling from the Python client's cost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from glob import glob
from typing import Any

import psycopg
from psycopg import sql

from execbudget.ledger import Ledger

from ._common import emit, machine, race_pairs

DEFAULT_URL = os.environ.get(
    "EXECBUDGET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _with(url: str, **options: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in options.items())


def commit_baseline(url: str, schema: str, seconds: float = 2.0) -> dict[str, Any]:
    """Single-row UPDATE commits/s on one connection: this machine's commit latency."""
    ident = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {}.baseline (id int PRIMARY KEY, v bigint)").format(ident)
        )
        conn.execute(sql.SQL("INSERT INTO {}.baseline VALUES (1, 0)").format(ident))
        update = sql.SQL("UPDATE {}.baseline SET v = v + 1 WHERE id = 1").format(ident)
        figures: dict[str, Any] = {}
        for mode in ("on", "off"):
            conn.execute("SELECT set_config('synchronous_commit', %s, false)", (mode,))
            n = 0
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                conn.execute(update, prepare=True)
                n += 1
            figures[f"commits_per_s_sync_{mode}"] = round(n / seconds)
        version = conn.execute("SHOW server_version").fetchone()
    return emit(
        "ledger.postgres.commit_baseline", **figures, postgres=version[0] if version else ""
    )


def postgres_procs(url: str, sync: str, procs: int, seconds: float, chain: str) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    storage_url = _with(url, schema=schema, synchronous_commit=sync, pool_min="1", pool_max="1")
    with Ledger.from_url(storage_url) as ledger:
        ledger.lines()  # migrate once, before the workers race to
    try:
        # three untimed pairs per process connect, check migrations and prepare statements
        figures = race_pairs(
            storage_url,
            procs,
            seconds,
            start_delay=2.0 + procs * 0.15,
            warmup=3,
            prefix_of=(lambda w: f"w{w}:") if chain == "cold" else None,
        )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return emit(
        f"ledger.postgres.{chain}.sync_{sync}.{procs}procs",
        **figures,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


_PGBENCH_PAIR = """\\set rnd random(1, 1000000000)
\\set team :client_id % 2
SELECT * FROM {s}.eb_reserve('p' || :client_id::text || '-' || :rnd::text,
  ARRAY['org_bench', 'team_' || :team::text, 'run_' || :client_id::text,
        'agent_' || :client_id::text],
  ARRAY['total', 'total', 'total', 'total'], ARRAY['cost', 'cost', 'cost', 'cost'],
  ARRAY[{big}, {big}, {big}, {big}]::bigint[], ARRAY[7, 7, 7, 7]::bigint[],
  ARRAY[NULL, NULL, NULL, NULL]::bigint[], 300000, 'release', false, NULL);
SELECT * FROM {s}.eb_settle('p' || :client_id::text || '-' || :rnd::text, 'commit',
  ARRAY['cost'], ARRAY[5]::bigint[], NULL);
"""


def pgbench_pairs(url: str, sync: str, clients: int, seconds: float) -> dict[str, Any] | None:
    """The same reserve+commit pair from pgbench: the server side alone."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/pgbench")) or [shutil.which("pgbench") or ""]
    if not found[-1]:
        return None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with Ledger.from_url(_with(url, schema=schema)) as ledger:
        ledger.lines()  # migrate
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write(_PGBENCH_PAIR.format(s=schema, big=10**15))
        env = {**os.environ, "PGOPTIONS": f"-c synchronous_commit={sync}"}
        out = subprocess.run(
            [found[-1], "-n", "-M", "prepared", "-f", script.name, "-c", str(clients),
             "-j", "2", "-T", str(max(1, round(seconds))), url],
            capture_output=True, text=True, env=env, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    tps = re.search(r"tps = ([0-9.]+)", out)
    latency = re.search(r"latency average = ([0-9.]+) ms", out)
    return emit(
        f"ledger.postgres.pgbench.hot.sync_{sync}.{clients}clients",
        pairs_per_s=round(float(tps.group(1))) if tps else None,
        pair_latency_avg_ms=float(latency.group(1)) if latency else None,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--sync", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--chain", nargs="+", default=["hot"], choices=["hot", "cold"])
    parser.add_argument("--pgbench", action="store_true", help="also drive the SQL from pgbench")
    args = parser.parse_args(argv)
    emit("machine", **machine())
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        records = [commit_baseline(args.url, schema)]
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    for chain in args.chain:
        for sync in args.sync:
            for procs in args.procs:
                records.append(postgres_procs(args.url, sync, procs, args.seconds, chain))
    if args.pgbench:
        for sync in args.sync:
            for procs in args.procs:
                record = pgbench_pairs(args.url, sync, procs, args.seconds)
                if record is not None:
                    records.append(record)
    return records


if __name__ == "__main__":
    main()
