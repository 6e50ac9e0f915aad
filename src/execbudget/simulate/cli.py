"""
``execbudget simulate [PATTERN] [--json] [--ledger URL] [--chart FILE] [--small]``.

Runs the named failure patterns (all five by default) without budgets and under the full
enforcement stack, prints the table (or JSON) and optionally writes the spend chart.
Exit codes: 0 every pattern contained with zero overshoot, 1 not contained, 2 bad usage.

The main CLI calls :func:`register`. Importing this module is cheap; it raises
``ImportError`` when a package the simulator needs is missing, so the main CLI can offer
the install hint instead of the command.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any, Final

from rich.console import Console

from . import DEFAULT_LEDGER, PATTERNS

__all__ = ["command", "register", "run"]

#: what the scenarios and the fake provider import (the ``all`` extra has every one)
_NEEDS: Final = (
    "openai",
    "httpx",
    "langgraph",
    "langchain_openai",
    "tenacity",
    "matplotlib",
    "starlette",
    "uvicorn",
)

_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(f"execbudget simulate needs {_missing[0]}", name=_missing[0])


def register(subparsers: Any) -> None:
    """Add the ``simulate`` subcommand (its ``func`` takes the parsed namespace)."""
    p = subparsers.add_parser(
        "simulate",
        help="reproduce the named budget failures, without budgets and with execbudget",
        description=(
            "Runaway recursion, silent fan-out, cost-latency coupling, partial enforcement "
            "and a retry storm, each run twice against a fake provider with the real SDKs: "
            "without budgets (or with a platform cap only) and under the full enforcement "
            "stack. Exit 0 only if every pattern is contained with zero overshoot."
        ),
    )
    p.add_argument(
        "pattern",
        nargs="?",
        default="all",
        metavar="PATTERN",
        help=f"all (default) or one of: {', '.join(PATTERNS)} (a unique part of a name will do)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--ledger", help=f"ledger URL (default {DEFAULT_LEDGER})")
    p.add_argument("--chart", metavar="FILE", help="write the cumulative-spend chart (PNG)")
    p.add_argument(
        "--small", action="store_true", help="smaller sizes: seconds instead of tens of seconds"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``execbudget simulate`` for parsed ``args``; returns the exit code."""
    return command(
        pattern=args.pattern,
        as_json=args.json,
        ledger=args.ledger or DEFAULT_LEDGER,
        chart=args.chart,
        small=args.small,
    )


def command(
    *,
    pattern: str | None,
    as_json: bool,
    ledger: str,
    chart: str | None,
    small: bool,
) -> int:
    """Simulate, print the report, write the chart; 0 if every pattern was contained."""
    from .chart import write_chart
    from .report import render, to_json
    from .runner import resolve, simulate

    patterns = resolve(pattern)
    progress = Console(stderr=True, highlight=False)

    def started(name: str) -> None:
        progress.print(f"[dim]simulating {name} …[/]")

    sim = simulate(patterns, ledger=ledger, small=small, on_start=started)
    if chart:
        sim.chart = write_chart(sim.results, chart)
    if as_json:
        print(to_json(sim))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=170)
        render(sim, console)
    return 0 if sim.contained else 1
