"""
``make demo``: budgets holding under concurrency, on the embedded SQLite ledger.

Three scenarios, each run twice: once with the accounting most tools do today (check the
spend so far, make the call, add its cost afterwards) and once with execbudget (hold the
worst case on every enclosing scope first, settle the actual after). Model calls are
simulated with a short sleep so the race window is the one real calls have.

    python -m execbudget.demo [--ledger sqlite:///.execbudget/demo.db] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .enforcer import Enforcer
from .errors import BudgetExceeded
from .ledger import Ledger

CALL_SECONDS = 0.02  # simulated model latency: the window in which post-hoc checks race


@dataclass
class Outcome:
    scenario: str
    mode: str
    budget: str
    spent: str
    calls: int
    overshoot: str
    stopped_by: str
    seconds: float


class PostHoc:
    """Today's usual guard: compare what was spent so far, spend, then record."""

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit
        self.spent = Decimal(0)
        self.lock = threading.Lock()

    def call(self, cost: Decimal) -> bool:
        with self.lock:
            if self.spent >= self.limit:
                return False
        time.sleep(CALL_SECONDS)  # the model call runs; others pass the same check meanwhile
        with self.lock:
            self.spent += cost
        return True


def _threads(n: int, target: Callable[[int], None]) -> float:
    started = time.perf_counter()
    pool = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - started


def fan_out_race(enforcer: Enforcer) -> list[Outcome]:
    """32 sub-agents share one run's 1.00 USD; each call may cost up to 0.05, costs 0.03–0.05."""
    limit, agents, calls_each = Decimal("1.00"), 32, 5
    costs = [[Decimal(random.Random(a * 100 + c).randint(30, 50)) / 1000
              for c in range(calls_each)] for a in range(agents)]

    naive = PostHoc(limit)
    naive_calls = [0]

    def naive_agent(a: int) -> None:
        for c in range(calls_each):
            if naive.call(costs[a][c]):
                naive_calls[0] += 1

    naive_s = _threads(agents, naive_agent)

    ours_calls = [0]
    lock = threading.Lock()
    with enforcer.run("fan-out-demo", limits={"cost": f"{limit} USD"}) as run:

        def agent(a: int) -> None:
            for c in range(calls_each):
                try:
                    with run.hold({"cost": "0.05"}) as hold:  # the worst case, before the call
                        time.sleep(CALL_SECONDS)
                        hold.actual = {"cost": costs[a][c]}
                except BudgetExceeded:
                    return
                with lock:
                    ours_calls[0] += 1

        ours_s = _threads(agents, agent)
        ours_spent = _spent(enforcer, run.key, "cost")
    return [
        Outcome("32 concurrent sub-agents", "post-hoc check", f"{limit} USD",
                f"{naive.spent} USD", naive_calls[0], f"{max(0, naive.spent - limit)} USD",
                "the check, too late", round(naive_s, 2)),
        Outcome("32 concurrent sub-agents", "execbudget", f"{limit} USD",
                f"{Decimal(ours_spent) / 10**9} USD", ours_calls[0],
                f"{max(Decimal(0), Decimal(ours_spent) / 10**9 - limit)} USD",
                "run cost budget (hold)", round(ours_s, 2)),
    ]


def runaway_loop(enforcer: Enforcer) -> list[Outcome]:
    """An agent whose tool fails forever: no step cap vs a 25-step budget."""
    naive_steps = 0
    started = time.perf_counter()
    while naive_steps < 500:  # a real runaway stops only when someone notices; we stop at 500
        naive_steps += 1
    naive_s = time.perf_counter() - started
    steps = 0
    started = time.perf_counter()
    with enforcer.run("runaway-demo", limits={"steps": 25}) as run:
        try:
            while True:
                run.step()
                steps += 1
        except BudgetExceeded as exc:
            stopped = f"{exc.budget_type} budget ({exc.dimension})"
    return [
        Outcome("agent loop that never ends", "no step cap", "25 steps", f"{naive_steps}+ steps",
                naive_steps, f"{naive_steps - 25}+ steps", "nothing (cut at 500 here)",
                round(naive_s, 3)),
        Outcome("agent loop that never ends", "execbudget", "25 steps", f"{steps} steps", steps,
                f"{max(0, steps - 25)} steps", stopped, round(time.perf_counter() - started, 3)),
    ]


def org_race(enforcer: Enforcer) -> list[Outcome]:
    """16 workers of one org drain a 2.00 USD daily org budget at machine speed."""
    limit = Decimal("2.00")
    naive = PostHoc(limit)
    naive_calls = [0]

    def naive_worker(w: int) -> None:
        rng = random.Random(w)
        while naive.call(Decimal(rng.randint(1, 9)) / 100):
            naive_calls[0] += 1

    naive_s = _threads(16, naive_worker)
    granted = [0]
    lock = threading.Lock()

    with enforcer.scope("org", "demo-org", limits={"cost": {"day": f"{limit} USD"}}) as org:

        def worker(w: int) -> None:
            rng = random.Random(w)
            misses = 0
            while misses < 3:
                cost = Decimal(rng.randint(1, 9)) / 100
                try:
                    with org.hold({"cost": "0.09"}) as hold:
                        time.sleep(CALL_SECONDS)
                        hold.actual = {"cost": cost}
                except BudgetExceeded:
                    misses += 1
                    continue
                with lock:
                    granted[0] += 1

        ours_s = _threads(16, worker)
        spent = Decimal(_spent(enforcer, org.key, "cost")) / 10**9
    return [
        Outcome("16 workers, one org, daily cap", "post-hoc check", f"{limit} USD/day",
                f"{naive.spent} USD", naive_calls[0], f"{max(0, naive.spent - limit)} USD",
                "the check, too late", round(naive_s, 2)),
        Outcome("16 workers, one org, daily cap", "execbudget", f"{limit} USD/day",
                f"{spent} USD", granted[0], f"{max(Decimal(0), spent - limit)} USD",
                "org daily cost budget", round(ours_s, 2)),
    ]


def _spent(enforcer: Enforcer, scope: str, dim: str) -> int:
    return sum(
        line.spent for line in enforcer.status(scope)
        if line.key.scope == scope and line.key.dimension == dim
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1] if __doc__ else None)
    parser.add_argument("--ledger", default="sqlite:///.execbudget/demo.db")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.ledger.startswith("sqlite:///"):
        path = Path(args.ledger.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    enforcer = Enforcer(None, Ledger.from_url(args.ledger))
    outcomes: list[Outcome] = []
    for scenario in (fan_out_race, runaway_loop, org_race):
        outcomes += scenario(enforcer)
    enforcer.close()
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=2))
    else:
        table = Table("scenario", "mode", "budget", "spent", "calls/steps", "overshoot",
                      "stopped by", "seconds", title=f"budgets under concurrency ({args.ledger})")
        for o in outcomes:
            style = "green" if o.mode == "execbudget" else "red"
            table.add_row(o.scenario, f"[{style}]{o.mode}[/]", o.budget, o.spent, str(o.calls),
                          o.overshoot, o.stopped_by, f"{o.seconds:.2f}")
        console = Console()
        if not console.is_terminal:
            console = Console(width=150)
        console.print(table)
    contained = all(
        o.overshoot.split()[0] in ("0", "0.00", "0.000") for o in outcomes if o.mode == "execbudget"
    )
    if not contained:
        Console(stderr=True).print("[red]overshoot with execbudget: this is a bug[/]")
    return 0 if contained else 1


def _cli(argv: list[str] | None = None) -> Any:  # pragma: no cover
    raise SystemExit(main(argv))


if __name__ == "__main__":  # pragma: no cover
    _cli()
