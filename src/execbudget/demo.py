"""
``make demo``: every failure pattern, without budgets and under execbudget.

Runs the failure-pattern simulator (``execbudget.simulate``) on the embedded SQLite
ledger: runaway recursion, silent fan-out, cost-latency coupling, partial budget
enforcement and a retry storm, each with the real openai SDK (and LangGraph, and tenacity)
against the fake provider on loopback, once as today's tools run them and once under the
full enforcement stack. Prints the table, writes the chart of cumulative spend, and exits
0 only if every pattern was contained with zero overshoot. See docs/failure-patterns.md.

    python -m execbudget.demo [--json] [--ledger URL] [--chart FILE] [--small]
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

DEMO_LEDGER = "sqlite:///.execbudget/demo.db"
DEMO_CHART = ".execbudget/demo-spend.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m execbudget.demo",
        description="Every failure pattern, without budgets and under execbudget.",
    )
    parser.add_argument("--ledger", default=DEMO_LEDGER, help=f"ledger URL (default {DEMO_LEDGER})")
    parser.add_argument("--chart", default=DEMO_CHART, help=f"chart file (default {DEMO_CHART})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--small", action="store_true", help="smaller sizes (what the tests run)")
    args = parser.parse_args(argv)
    from .errors import ConfigurationError, LedgerUnavailable

    try:
        from .simulate.cli import command
    except ImportError as exc:
        print(
            f"error: the demo needs {exc.name}; install the extras with "
            'pip install -e ".[dev]" (or run make demo)',
            file=sys.stderr,
        )
        return 2
    try:
        return command(
            pattern="all", as_json=args.json, ledger=args.ledger, chart=args.chart, small=args.small
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def _cli(argv: list[str] | None = None) -> NoReturn:  # pragma: no cover
    raise SystemExit(main(argv))


if __name__ == "__main__":  # pragma: no cover
    _cli()
