"""
``python -m bench`` (or ``make bench``): every benchmark, one after another, as JSON lines.

Each benchmark is a module ``bench/bench_*.py`` with a ``main(argv)``; run one alone with
``python -m bench.bench_ledger`` and so on. Output goes to stdout and, with ``--out``, to a
JSON-lines file that BENCHMARKS.md figures are copied from (with the machine and date).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark names (default: all)")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    names = args.only or modules()
    failed = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(args.out.open("a")) if args.out else None
        for name in names:
            started = time.perf_counter()
            print(f"# {name}", file=sys.stderr, flush=True)
            # Each benchmark in its own interpreter: no warm caches or threads carry over.
            proc = subprocess.run(
                [sys.executable, "-m", f"bench.{name}"],
                cwd=HERE.parent,
                text=True,
                stdout=subprocess.PIPE,
                check=False,
            )
            sys.stdout.write(proc.stdout)
            if out:
                out.write(proc.stdout)
            if proc.returncode != 0:
                failed.append(name)
            print(
                f"# {name}: exit {proc.returncode} in {time.perf_counter() - started:.0f}s",
                file=sys.stderr,
            )
    if failed:
        print(json.dumps({"failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
