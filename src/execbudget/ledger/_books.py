"""
Reconciliation: recompute every line's books from the event log and compare.

The event log is the audit and billing feed, so it must explain the lines exactly:
spent = Σ charges, held = Σ holds of reservations not yet settled. A mismatch means a
write was lost or applied twice; tests and ``execbudget ledger verify`` use this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ._types import Event, LineKey, LineState


@dataclass(frozen=True, slots=True)
class BookMismatch:
    key: LineKey
    field: str
    in_line: int
    from_events: int


def reconcile(lines: Iterable[LineState], events: Iterable[Event]) -> list[BookMismatch]:
    """Every line whose spent or held differs from what the event log implies."""
    spent: dict[LineKey, int] = defaultdict(int)
    held: dict[LineKey, int] = defaultdict(int)
    open_holds: dict[str, dict[LineKey, int]] = {}
    for event in events:
        if event.kind == "reserve":
            open_holds[event.rid] = dict(event.amounts)
            for key, amount in event.amounts.items():
                held[key] += amount
            continue
        for key, amount in open_holds.pop(event.rid, {}).items():
            held[key] -= amount
        for key, amount in event.amounts.items():
            spent[key] += amount
    problems = []
    for line in lines:
        if line.spent != spent[line.key]:
            problems.append(BookMismatch(line.key, "spent", line.spent, spent[line.key]))
        if line.held != held[line.key]:
            problems.append(BookMismatch(line.key, "held", line.held, held[line.key]))
    return problems
