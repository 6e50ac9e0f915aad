"""
The simulator's report: a rich table for people, JSON for machines.

One row per pattern: spend without budgets (or with the platform cap only), spend under
execbudget, the budget both are measured against, what stopped each run (the layer and
the budget, or the simulator's safety cap) and the overshoot. Spend marked ``≥`` was cut
short by the safety cap: the run would have gone on.
"""

from __future__ import annotations

import json
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .model import ScenarioResult, Variant, fmt
from .runner import Simulation

__all__ = ["render", "to_json"]


def to_json(sim: Simulation) -> str:
    return json.dumps(sim.to_dict(), indent=2)


def _spend(r: ScenarioResult, v: Variant) -> Text:
    text = Text(("≥ " if v.capped else "") + fmt(v.spend, r.unit))
    text.append(f"\n{v.requests:,} calls · {v.elapsed_s:.1f} s", style="dim")
    if v.mode not in ("no budgets", "execbudget"):
        text.append(f"\n({v.mode})", style="dim")
    return text


def _overshoot(r: ScenarioResult, v: Variant) -> str:
    over = r.overshoot(v)
    if over == 0:
        return "0"
    return ("≥ +" if v.capped else "+") + fmt(over, r.unit)


def _stopped(r: ScenarioResult) -> Text:
    text = Text()
    text.append("without: ", style="dim")
    text.append(r.without.stop.text, style="red")
    text.append("\nwith: ", style="dim")
    text.append(r.budgeted.stop.text, style="green" if r.contained else "bold red")
    return text


def _overshoots(r: ScenarioResult) -> Text:
    text = Text()
    text.append(_overshoot(r, r.without), style="red" if r.failure_shown else "")
    text.append(" → ")
    ours = _overshoot(r, r.budgeted)
    text.append(ours, style="bold green" if r.contained else "bold red")
    return text


def _count(n: int) -> str:
    return "the pattern" if n == 1 else f"all {n} patterns"


def render(sim: Simulation, console: Console) -> None:
    """Print the table, the notes under it, and the verdict."""
    table = Table(
        "pattern",
        "spend without budgets",
        "spend with execbudget",
        "budget",
        "stopped by",
        "overshoot",
        title=f"failure patterns, with and without budgets  (ledger {sim.ledger})",
        show_lines=True,
    )
    for r in sim.results:
        table.add_row(
            Text(r.title, style="bold"),
            _spend(r, r.without),
            _spend(r, r.budgeted),
            r.budget_label,
            _stopped(r),
            _overshoots(r),
        )
    console.print(table)
    for r in sim.results:
        console.print(f"[bold]{r.title}[/]: " + "; ".join(r.notes))
        for label, v in (("without", r.without), ("with", r.budgeted)):
            for note in v.notes:
                console.print(f"  [dim]{label}:[/] {note}")
            for problem in v.problems if label == "with" else []:
                console.print(f"  [bold red]ledger:[/] {problem}")
    capped = [r.title for r in sim.results if r.without.capped]
    if capped:
        console.print(
            "[dim]≥: stopped by the simulator's safety cap, a stated bound on runs with nothing "
            f"else to stop them ({', '.join(capped)}); they would have gone on.[/]"
        )
    if sim.chart is not None:
        console.print(f"chart: {sim.chart}")
    total = sum((r.overshoot(r.budgeted) for r in sim.results), Decimal(0))
    if sim.contained:
        console.print(
            f"[bold green]✓ {_count(len(sim.results))} contained with zero overshoot[/] "
            f"[dim]({sim.elapsed_s:.1f} s)[/]"
        )
    else:
        failed = [r.title for r in sim.results if not r.contained]
        console.print(
            f"[bold red]✗ not contained: {', '.join(failed)} (overshoot {total}); "
            "this is a bug in execbudget[/]"
        )
