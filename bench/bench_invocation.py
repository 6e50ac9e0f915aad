"""
The invocation layer's cost and effect, against the fake provider in a child process.

    python -m bench.bench_invocation [--calls N] [--quick]

1. **Added latency** of a wrapped call over an unwrapped one (SQLite ledger, target p50
   ≤ 0.3 ms; memory ledger for the wrapper's own share). Raw and wrapped calls alternate
   so drift and load hit both alike. Figures: the difference of the two p50s (end to
   end, noisy on a loaded machine); the wrapper's own time per call (everything but the
   SDK call itself: count, plan, hold, settle), which is what the wrapper adds and is not
   drowned by HTTP jitter; the same in CPU time of the calling thread (what the wrapper
   costs when the machine is not shared: wall time on a loaded machine also counts the
   time the process waits for a core); and, interleaved, a bare ledger hold+commit of the
   same chain, the part of the wrapper's time that is the ledger's two transactions.
   With SQLite it runs twice: every call sending the same message (as a chat re-sends
   its history and system prompt; the wrapper remembers token counts per string), and
   every call sending a message never sent before (only the role string is remembered).
2. **Budget utilisation at exhaustion**: many concurrent callers each call until they are
   denied; spent / limit when all have stopped, with clamping (``degradation: clamp``)
   and with holds that are not clamped (``deny``), for budgets of several sizes. Two
   workloads: answers that use their whole ``max_tokens`` (only the end-of-budget gap
   differs) and answers that use 30% of it (unclamped worst-case holds also deny callers
   while the budget is not spent).
3. ``--accuracy``: held input / billed input per request on the token-count corpus of
   ``tests/invocation/test_bounds.py`` (run from the repository root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import execbudget
from execbudget import BudgetExceeded, Enforcer
from execbudget.invocation import _clients
from execbudget.pricing import PriceBook, TokenCounter
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units

from ._common import emit, machine, percentile

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Summarise the budget policy in one short line."}]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- 1. added latency -----------------------------------------------------------------------
class _SendTimer:
    """Measures the SDK call inside a wrapped call, to isolate the wrapper's own time."""

    def __init__(self) -> None:
        self.last = 0.0
        self.last_cpu = 0.0
        self._drive = _clients.drive

    def install(self) -> None:
        timer = self

        def drive(call: Any, send: Any) -> Any:
            def timed(kw: dict[str, Any]) -> Any:
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    return send(kw)
                finally:
                    timer.last = time.perf_counter() - t0
                    timer.last_cpu = time.thread_time() - c0

            return timer._drive(call, timed)

        _clients.drive = drive  # type: ignore[assignment]

    def uninstall(self) -> None:
        _clients.drive = self._drive


def added_latency(
    fp: FakeProvider, calls: int, tmp: Path, ledger: str, *, fresh: bool = False
) -> dict[str, Any]:
    """
    ``fresh``: every call sends a message it never sent before (raw and wrapped alike), so
    the wrapper's per-string token-count memo only knows the role; otherwise every call
    sends the same message, as a chat re-sends its history and system prompt.
    """
    policy = {
        "scopes": [
            {
                "match": "run:*",
                "limits": {"cost": "1000 USD", "tokens": "1G", "calls": "10M"},
                "per_call": {"max_output_tokens": 64},
            },
            {"match": "team:*", "limits": {"cost": {"day": "1000 USD"}}},
        ]
    }
    url = "memory://" if ledger == "memory" else f"sqlite:///{tmp}/latency{int(fresh)}.db"
    enforcer = Enforcer(policy, url)
    raw = fp.openai()
    wrapped = execbudget.wrap(fp.openai(), enforcer=enforcer)
    timer = _SendTimer()
    timer.install()
    raw_s: list[float] = []
    wrapped_s: list[float] = []
    own_s: list[float] = []
    own_cpu_s: list[float] = []
    ledger_s: list[float] = []
    amounts = {"cost": Decimal("0.00002"), "tokens": 80, "input_tokens": 16, "calls": 1}
    actual = {"cost": Decimal("0.00001"), "tokens": 24, "input_tokens": 16, "calls": 1}
    try:
        with enforcer.scope("team", "bench"), enforcer.run("latency"):
            for i in range(calls + 50):
                messages = MESSAGES
                if fresh:
                    messages = [{"role": "user", "content": f"{MESSAGES[0]['content']} ({i})"}]
                t0 = time.perf_counter()
                raw.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
                t1, c1 = time.perf_counter(), time.thread_time()
                wrapped.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
                t2, c2 = time.perf_counter(), time.thread_time()
                enforcer.hold(amounts).commit(actual)  # the ledger's share: the same two ops
                t3 = time.perf_counter()
                if i >= 50:  # warm-up: encodings, price data, connections
                    raw_s.append(t1 - t0)
                    wrapped_s.append(t2 - t1)
                    own_s.append((t2 - t1) - timer.last)
                    own_cpu_s.append((c2 - c1) - timer.last_cpu)
                    ledger_s.append(t3 - t2)
    finally:
        timer.uninstall()
        raw.close()
        wrapped.close()  # type: ignore[attr-defined]
        enforcer.close()
    for values in (raw_s, wrapped_s, own_s, own_cpu_s, ledger_s):
        values.sort()
    ms = 1000.0
    return emit(
        f"invocation.latency.{ledger}.sync",
        messages="new on every call" if fresh else "the same on every call",
        calls=calls,
        raw_p50_ms=round(percentile(raw_s, 0.5) * ms, 3),
        wrapped_p50_ms=round(percentile(wrapped_s, 0.5) * ms, 3),
        added_p50_ms=round((percentile(wrapped_s, 0.5) - percentile(raw_s, 0.5)) * ms, 3),
        wrapper_own_p50_ms=round(percentile(own_s, 0.5) * ms, 3),
        wrapper_own_p99_ms=round(percentile(own_s, 0.99) * ms, 3),
        wrapper_own_cpu_p50_ms=round(percentile(own_cpu_s, 0.5) * ms, 3),
        ledger_hold_commit_p50_ms=round(percentile(ledger_s, 0.5) * ms, 3),
        chain="team (day window) + run: cost, tokens, calls (4 lines)",
        load=_load(),
    )


async def added_latency_async(fp: FakeProvider, calls: int, tmp: Path) -> dict[str, Any]:
    policy = {"scopes": [{"match": "run:*", "limits": {"cost": "1000 USD", "tokens": "1G"}}]}
    enforcer = Enforcer(policy, f"sqlite:///{tmp}/latency_async.db")
    raw = fp.async_openai()
    wrapped = execbudget.wrap(fp.async_openai(), enforcer=enforcer)
    raw_s: list[float] = []
    wrapped_s: list[float] = []
    async with raw, wrapped, enforcer.run("latency"):  # type: ignore[attr-defined]
        for i in range(calls + 50):
            t0 = time.perf_counter()
            await raw.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
            t1 = time.perf_counter()
            await wrapped.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
            t2 = time.perf_counter()
            if i >= 50:
                raw_s.append(t1 - t0)
                wrapped_s.append(t2 - t1)
    enforcer.close()
    ms = 1000.0
    return emit(
        "invocation.latency.sqlite.async",
        calls=calls,
        raw_p50_ms=round(statistics.median(raw_s) * ms, 3),
        wrapped_p50_ms=round(statistics.median(wrapped_s) * ms, 3),
        added_p50_ms=round((statistics.median(wrapped_s) - statistics.median(raw_s)) * ms, 3),
        load=_load(),
    )


# -- 2. utilisation at exhaustion -----------------------------------------------------------
async def utilisation(
    fp: FakeProvider,
    tmp: Path,
    *,
    mode: str,
    calls_worth: float,
    callers: int,
    answer_fraction: float,
    max_tokens: int = 1000,
) -> dict[str, Any]:
    book = PriceBook()
    inputs = TokenCounter().count_chat(MESSAGES, MODEL)
    worst = book.worst_case_cost(MODEL, input_tokens=inputs, max_output_tokens=max_tokens)
    limit = (worst * Decimal(str(calls_worth))).quantize(Decimal("0.000000001"))
    policy = {
        "degradation": {"mode": mode},
        "scopes": [
            {
                "match": "team:*",
                "limits": {"cost": f"{limit} USD"},
                "per_call": {"min_output_tokens": 16},
            }
        ],
    }
    fp.configure(output_tokens=max(1, int(max_tokens * answer_fraction)), latency_ms=20)
    enforcer = Enforcer(policy, f"sqlite:///{tmp}/util_{mode}_{calls_worth}_{answer_fraction}.db")
    ok = denied = 0

    async def caller(client: Any) -> None:
        nonlocal ok, denied
        while True:
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=max_tokens
                )
                ok += 1
            except BudgetExceeded:
                denied += 1
                return

    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:  # type: ignore[attr-defined]
        with enforcer.scope("team", "bench"):
            await asyncio.gather(*(caller(client) for _ in range(callers)))
    spent = max(line.spent for line in enforcer.status())
    held = sum(line.held for line in enforcer.status())
    enforcer.close()
    return emit(
        "invocation.utilisation",
        mode=mode,
        budget_in_worst_calls=calls_worth,
        answer_fraction=answer_fraction,
        callers=callers,
        calls_ok=ok,
        utilisation_pct=round(100 * spent / money_to_units(limit), 2),
        held_after=held,
    )


# -- 3. accuracy of the held input ----------------------------------------------------------
def accuracy(fp: FakeProvider) -> list[dict[str, Any]]:
    """Held input / billed input on the corpus of tests/invocation/test_bounds.py."""
    from tests.invocation.test_bounds import (
        POLICY,
        TEXTS,
        anthropic_requests,
        chat_requests,
        reserved_and_charged,
    )

    out = []
    for family in ("gpt-4o-mini", "gpt-4", "claude-haiku-4-5", "claude-opus-4-7", "embeddings"):
        fp.reset()
        fp.configure(output_tokens=40, tool_call_policy="never")
        enforcer = Enforcer(POLICY, "memory://")
        with enforcer.run("corpus"):
            if family.startswith("claude"):
                with execbudget.wrap(fp.anthropic(), enforcer=enforcer) as ant:  # type: ignore[attr-defined]
                    for request in anthropic_requests():
                        ant.messages.create(model=family, max_tokens=64, **request)
                        for _ in ant.messages.create(
                            model=family, max_tokens=64, stream=True, **request
                        ):
                            pass
            else:
                with execbudget.wrap(fp.openai(), enforcer=enforcer) as client:  # type: ignore[attr-defined]
                    if family == "embeddings":
                        for text in TEXTS:
                            client.embeddings.create(
                                model="text-embedding-3-small", input=[text, text[:9]]
                            )
                    else:
                        for request in chat_requests(family):
                            client.chat.completions.create(model=family, max_tokens=64, **request)
                        for text in TEXTS:
                            client.responses.create(model=family, input=text, instructions="Hi.")
                            message = [{"role": "user", "content": text}]
                            for _ in client.chat.completions.create(
                                model=family, messages=message, stream=True
                            ):
                                pass
        records = fp.requests
        pairs = reserved_and_charged(enforcer)
        ratios = [
            h["input_tokens"] / (r.input_tokens or 1)
            for (h, _), r in zip(pairs, records, strict=True)
        ]
        out.append(
            emit(
                "invocation.accuracy",
                model=family,
                requests=len(ratios),
                held_over_billed_min=round(min(ratios), 3),
                held_over_billed_median=round(statistics.median(ratios), 3),
                held_over_billed_max=round(max(ratios), 3),
                under_counts=sum(1 for x in ratios if x < 1),
                overrun_lines=sum(1 for line in enforcer.status() if line.overrun),
            )
        )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="fewer calls, one budget size")
    parser.add_argument("--accuracy", action="store_true", help="only the held-input accuracy")
    args = parser.parse_args(argv)
    if args.accuracy:
        with FakeProvider() as fp:
            return accuracy(fp)
    calls = 300 if args.quick else args.calls
    results = [emit("machine", **machine(), load_at_start=_load())]
    with tempfile.TemporaryDirectory() as tmp, FakeProvider(process=True) as fp:
        path = Path(tmp)
        results.append(added_latency(fp, calls, path, "sqlite"))
        results.append(added_latency(fp, calls, path, "sqlite", fresh=True))
        results.append(added_latency(fp, calls, path, "memory"))
        results.append(asyncio.run(added_latency_async(fp, calls // 2, path)))
        # budgets that are not a whole number of worst-case calls (the usual case)
        sizes = [10.5] if args.quick else [4.6, 10.5, 40.3]
        for fraction in (1.0, 0.3):
            for size in sizes:
                for mode in ("clamp", "deny"):
                    results.append(
                        asyncio.run(
                            utilisation(
                                fp,
                                path,
                                mode=mode,
                                calls_worth=size,
                                callers=args.callers,
                                answer_fraction=fraction,
                            )
                        )
                    )
    results.append(emit("done", load_at_end=_load()))
    return results


if __name__ == "__main__":
    main()
