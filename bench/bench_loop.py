"""
The agent-loop layer's overhead, and concurrent delegates against a peer framework.

    python -m bench.bench_loop [--ops N] [--quick]

1. **Overhead per guarded action** (targets: ≤ 5 µs with the memory ledger, ≤ 100 µs with
   SQLite): a step (``run.step()`` and one iteration of ``for step in run.steps()``), a
   tool call (``@execbudget.tool``), a retry check: ``run.retry()`` and tenacity's
   ``charge_retries`` hook (the charge that enforces), and separately tenacity's
   ``stop_on_budget`` (a read of the room left, made once per failed attempt). Each on a
   one-line chain (a run with a step/tool/retry limit) and a three-line chain (org → team
   → run, all limited).
   Reported per operation: wall time (median of several batches) and the calling thread's
   CPU time (``thread_time``: what the action costs when the machine is not shared; on a
   loaded machine wall time also counts waiting for a core). Baselines: the same action
   with nothing limited on the chain (no ledger round trip), and the bare ledger operation
   the action makes (``Ledger.try_reserve(..., charge_now=True)``), so the part that is the
   ledger's is visible.
2. **Where the time goes**: a profile of ``run.step()`` grouped by module.
3. **32 concurrent delegates on a 3,000-token budget**: pydantic-ai's ``UsageLimits``
   (delegates share ``ctx.usage``) against ``execbudget`` (``BudgetedModel``), real agents
   and ``OpenAIChatModel`` over the fake provider (in a child process); tokens billed by
   the provider and requests sent.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tenacity
from pydantic_ai import Agent, RunContext, UsageLimits
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import execbudget
from execbudget import BudgetExceeded, Enforcer
from execbudget.integrations.pydantic_ai import openai_model
from execbudget.integrations.tenacity import charge_retries, stop_on_budget

from ._common import emit, machine

BIG = 10**15
COUNTED = {"steps": BIG, "tool_calls": BIG, "retries": BIG}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _policy(chain: int) -> dict[str, Any]:
    if chain == 0:
        return {"scopes": []}
    rules = [{"match": "run:bench", "limits": COUNTED}]
    if chain == 3:
        rules += [
            {"match": "org:acme", "limits": COUNTED},
            {"match": "team:acme/agents", "limits": COUNTED},
        ]
    return {"scopes": rules}


def _measure(op: Callable[[], Any], ops: int, batches: int) -> tuple[float, float]:
    """(median wall µs, median thread-CPU µs) per call of ``op`` over ``batches`` batches."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(batches):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(ops):
            op()
        w1, c1 = time.perf_counter(), time.thread_time()
        walls.append((w1 - w0) / ops * 1e6)
        cpus.append((c1 - c0) / ops * 1e6)
    return statistics.median(walls), statistics.median(cpus)


class _Chain:
    """An enforcer and an open chain (org → team → run, or a run alone) to act on."""

    def __init__(self, url: str, chain: int) -> None:
        self.enforcer = Enforcer(_policy(chain), url)
        self._scopes = []
        if chain == 3:
            self._scopes += [
                self.enforcer.scope("org", "acme"),
                self.enforcer.scope("team", "acme/agents"),
            ]
        self._scopes.append(self.enforcer.run("bench"))

    def __enter__(self) -> execbudget.Scope:
        for scope in self._scopes:
            scope.__enter__()
        return self._scopes[-1]

    def __exit__(self, *exc: object) -> None:
        for scope in reversed(self._scopes):
            scope.__exit__(*exc)
        self.enforcer.close()


def _actions(run: execbudget.Scope) -> dict[str, Callable[[], Any]]:
    steps = iter(run.steps())

    @execbudget.tool
    def tool() -> None:
        return None

    hook = charge_retries()
    stop = stop_on_budget()
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = 2

    def retry_hook() -> None:
        hook(state)  # tenacity's before-attempt hook: charge one retry (the enforcement)

    def retry_stop() -> None:
        stop(state)  # tenacity asks "stop?" after a failure: a read of the room left

    lines = run.enforcer.prepare({"steps": 1}, run.frame)[1]
    ledger = run.enforcer.ledger

    def bare_ledger() -> None:
        ledger.try_reserve(lines, charge_now=True)

    return {
        "step": run.step,
        "steps_iter": lambda: next(steps),
        "tool_call": tool,
        "retry": run.retry,
        "retry_charge_tenacity_hook": retry_hook,
        "retry_stop_read_tenacity": retry_stop,
        "bare_ledger_charge": bare_ledger,
    }


def overhead(ops: int, batches: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("memory", "sqlite"):
            url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'loop.db'}"
            n = ops if backend == "memory" else max(200, ops // 20)
            for chain in (0, 1, 3):
                with _Chain(url, chain) as run:
                    actions = _actions(run)
                    if chain == 0:
                        actions.pop("bare_ledger_charge")  # nothing limited: no ledger call
                    for name, op in actions.items():
                        for _ in range(min(n, 200)):
                            op()  # warm: caches, the SQLite file, the plan skeletons
                        wall, cpu = _measure(op, n, batches)
                        out.append(
                            emit(
                                f"loop.overhead.{backend}.{name}",
                                chain_lines=chain,
                                wall_us=round(wall, 2),
                                cpu_us=round(cpu, 2),
                                ops=n * batches,
                                load=_load(),
                            )
                        )
    return out


def profile(ops: int) -> dict[str, Any]:
    """Where one ``run.step()`` spends its time, by module (memory ledger, one line)."""
    with _Chain("memory://", 1) as run:
        for _ in range(1000):
            run.step()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(ops):
            run.step()
        prof.disable()
    stats = pstats.Stats(prof)
    groups: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        path = filename.replace("\\", "/")
        if "/execbudget/ledger/_memory" in path:
            group = "ledger storage (MemoryStorage.reserve)"
        elif "/execbudget/ledger/" in path:
            group = "ledger facade (Ledger.try_reserve, checks, ids)"
        elif "/execbudget/" in path:
            group = "enforcer + scopes (plan, units, deadline)"
        else:
            group = "python builtins and stdlib"
        groups[group] = groups.get(group, 0.0) + tottime
        total += tottime
    shares = {
        k: round(100 * v / total, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
    }
    return emit("loop.profile.memory.step", share_percent=shares, ops=ops, load=_load())


# -- 3. concurrent delegates ---------------------------------------------------------------
DELEGATES = 32
LIMIT = 3_000
CHILD_OUTPUT = 1_000
MODEL = "gpt-4o-mini"


async def _delegates(fp: Any, ours: bool) -> dict[str, Any]:
    parent_client = fp.async_openai(default_headers={"x-fake-tool-calls-per-turn": str(DELEGATES)})
    child_client = fp.async_openai(
        default_headers={
            "x-fake-output-tokens": str(CHILD_OUTPUT),
            "x-fake-latency-ms": "50",
            "x-fake-tool-call-policy": "never",
        }
    )
    if ours:
        parent_model: Any = openai_model(MODEL, parent_client)
        child_model: Any = openai_model(MODEL, child_client)
        settings: Any = {"max_tokens": CHILD_OUTPUT}
    else:
        parent_model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=parent_client))
        child_model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=child_client))
        settings = None
    child: Any = Agent(child_model, model_settings=settings)
    parent: Any = Agent(parent_model, model_settings=settings)
    outcome = {"finished": 0, "refused": 0}

    @parent.tool
    async def delegate(ctx: RunContext[None], topic: str) -> str:
        if not ours:
            result = await child.run(topic, usage=ctx.usage, usage_limits=ctx.usage_limits)
            outcome["finished"] += 1
            return str(result.output)
        try:
            result = await child.run(topic)
        except BudgetExceeded:
            outcome["refused"] += 1
            return "refused"
        outcome["finished"] += 1
        return str(result.output)

    fp.reset()
    error = None
    try:
        if ours:
            execbudget.configure(
                {"scopes": [{"match": "run:parent", "limits": {"tokens": LIMIT}}]}, "memory://"
            )
            async with execbudget.run("parent"):
                await parent.run("go", usage_limits=UsageLimits(request_limit=None))
        else:
            limits = UsageLimits(request_limit=None, total_tokens_limit=LIMIT)
            await parent.run("go", usage_limits=limits)
    except Exception as exc:  # both end in a limit error; we report it
        error = type(exc).__name__
    await asyncio.sleep(0.3)  # let the provider finish logging cancelled requests
    stats = fp.stats
    billed = stats.input_tokens + stats.output_tokens
    await parent_client.close()
    await child_client.close()
    return emit(
        f"loop.delegates.{'execbudget' if ours else 'pydantic_ai_usage_limits'}",
        delegates=DELEGATES,
        limit_tokens=LIMIT,
        requests_sent=stats.requests,
        tokens_billed=billed,
        overshoot_tokens=max(0, billed - LIMIT),
        overshoot_x=round(billed / LIMIT, 2),
        delegates_finished=outcome["finished"],
        delegates_refused=outcome["refused"],
        ended_with=error,
    )


def delegates() -> list[dict[str, Any]]:
    from execbudget.testing import FakeProvider

    with FakeProvider(process=True) as fp:
        return [asyncio.run(_delegates(fp, ours=False)), asyncio.run(_delegates(fp, ours=True))]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=20_000, help="operations per batch (memory)")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.batches = 2_000, 3
    emit("machine", **machine(), load=_load())
    results = overhead(args.ops, args.batches)
    results.append(profile(min(args.ops, 20_000)))
    results.extend(delegates())
    return results


if __name__ == "__main__":
    main()
