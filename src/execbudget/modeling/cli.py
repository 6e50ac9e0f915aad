"""
``execbudget model GRAPH``: the cascade cost model from the command line.

The main CLI calls :func:`register` to add the subcommand; :func:`main` runs it on its own
(``python -m execbudget.modeling.cli GRAPH``). Exit codes: 0 done, 2 invalid graph or
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..errors import ConfigurationError

#: Show a progress bar when a simulation has at least this many runs.
_PROGRESS_RUNS = 100_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``model`` subcommand (its ``func`` takes the parsed namespace)."""
    p = subparsers.add_parser(
        "model",
        help="model a workflow's cascade cost and derive its caps",
        description=(
            "Exact moments, Monte Carlo distribution, derived caps, a what-if under the caps "
            "and the guaranteed worst case of the workflow in GRAPH (YAML or TOML)."
        ),
    )
    p.add_argument("graph", metavar="GRAPH", help="the graph spec (.yaml, .yml or .toml)")
    p.add_argument("--runs", type=int, default=200_000, help="runs per simulation (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, choices=(1, 2), help="processes (1 or 2)")
    p.add_argument(
        "--truncation",
        type=float,
        default=None,
        help="share of runs each derived cap may stop (default: the graph's, 0.001)",
    )
    p.add_argument("--runs-per-day", type=int, default=None, help="daily volume for a daily budget")
    p.add_argument("--emit-policy", metavar="FILE", help="write the derived policy (YAML)")
    p.add_argument("--plot", metavar="FILE", help="write the figure (.png or .svg)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``execbudget model`` for parsed ``args``; returns the exit code."""
    err = Console(stderr=True)
    try:
        from .analysis import analyze
        from .plot import plot
        from .policy_out import write_policy
        from .report import render, to_json
    except ImportError as exc:  # numpy, scipy or networkx missing
        err.print(
            f"[red]error:[/red] the cost modeler needs the modeling extra ({exc.name} is "
            'missing): pip install "execbudget[modeling]"'
        )
        return 2
    if args.runs < 1:
        err.print("[red]--runs must be at least 1")
        return 2
    show = not args.json and args.runs >= _PROGRESS_RUNS and err.is_terminal
    try:
        if show:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} runs"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                tasks: dict[str, TaskID] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(stage, total=total)
                    bar.update(tasks[stage], completed=done)

                analysis = _analyze(analyze, args, progress)
        else:
            analysis = _analyze(analyze, args, None)
        if args.emit_policy:
            write_policy(analysis, args.emit_policy)
        if args.plot:
            plot(analysis, args.plot)
    except (ConfigurationError, ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(to_json(analysis), indent=2) + "\n")
    else:
        out = Console()
        render(analysis, out)
        if args.emit_policy:
            out.print(f"policy written to {args.emit_policy}")
        if args.plot:
            out.print(f"figure written to {args.plot}")
    return 0


def _analyze(analyze: Any, args: argparse.Namespace, progress: Any) -> Any:
    return analyze(
        args.graph,
        runs=args.runs,
        seed=args.seed,
        workers=args.workers,
        truncation=args.truncation,
        runs_per_day=args.runs_per_day,
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``model`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="execbudget")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["model", *(argv if argv is not None else sys.argv[1:])])
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main", "register", "run"]
