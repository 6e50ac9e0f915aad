"""
Cost-latency coupling: a latency optimisation that tripled the parallel calls.

A nightly Q&A job answers questions four at a time. To cut its latency, each question is
sent as *hedged* requests: several identical calls in parallel, the first answer wins,
and the others run on (and are billed: cancelling an HTTP request does not stop a
provider's meter). The design sent 4 hedges; someone raised it to 12 "for the tail".
Concurrency is where cost and latency meet: three times the calls is three times the
spend, and three times the load on the provider, which answers every call more slowly, so
the tail the change was meant to cut gets longer. Frameworks only cap parallelism
(``max_concurrency``), never what the parallel calls cost (frameworks.md §5.5); gateways
overshoot by concurrency × request cost (gateways.md §1.2).

The provider's slowdown under load is the simulator's load model (``_harness.LoadModel``):
latency = base × (1 + requests in flight / capacity) × log-normal jitter, a stated
stand-in for provider-side queueing.

* **Without budgets**: 12 hedges per question, ``asyncio.gather`` over the async openai SDK.
* **With execbudget**: the same code through ``run.amap``; the question's ``fan_out``
  budget (4, ``on_excess: truncate``) admits the first 4 hedges before any starts, the
  ``concurrency`` budgets hold the provider load to the design (4 per question, 16 for the
  job), and the job's nightly spend cap stands behind both.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import wrap
from ..errors import BudgetExceeded
from ..units import units_to_money
from ._harness import (
    Harness,
    LoadModel,
    Probe,
    SafetyCap,
    SafetyCapReached,
    instructions,
    percentile,
    stop_from_denial,
)
from ._policies import MODEL, ORG, amount, org_rule, run_rule
from .model import ScenarioResult, Stop

if TYPE_CHECKING:
    import openai

    from ..orchestration import FanOutReport

__all__ = ["DEMO", "PATTERN", "SMALL", "Size", "run"]

PATTERN: Final = "cost-latency-coupling"
TITLE: Final = "Cost-latency coupling"
_WORKFLOW: Final = "nightly-qa"
#: each question is one run of the workflow, named like it (the audit's convention)
_RUN: Final = _WORKFLOW


@dataclass(frozen=True, slots=True)
class Size:
    questions: int = 32
    #: questions answered at once (both variants)
    parallel: int = 4
    #: hedges per question in the design, and after the "optimisation"
    designed: int = 4
    hedges: int = 12
    #: the job's nightly spend budget (the design's spend plus a margin)
    budget: str = "0.60 USD"
    prompt_tokens: int = 1_200
    output_tokens: int = 150
    #: the load model: latency at no load, and the in-flight count that doubles it
    base_ms: float = 20.0
    capacity: float = 8.0
    safety_requests: int = 5_000


DEMO: Final = Size()
SMALL: Final = Size(
    questions=12, parallel=4, budget="0.15 USD", prompt_tokens=400, base_ms=10.0, capacity=8.0
)


def policy(size: Size) -> dict[str, Any]:
    in_flight = size.parallel * size.designed
    return {
        "scopes": [
            org_rule(),
            run_rule(
                f"workflow:{_WORKFLOW}",
                cost=size.budget,
                calls=size.questions * size.designed * 2,
                fan_out=size.questions * size.designed * 2,
                concurrency=in_flight,
                time="300s",
                max_output_tokens=256,
            ),
            run_rule(
                f"run:{_RUN}",
                fan_out=size.designed,
                concurrency=size.designed,
                calls=size.designed * 2,
                cost="0.05 USD",
                time="30s",
                max_output_tokens=256,
                on_excess="truncate",
            ),
        ]
    }


async def _ask(client: openai.AsyncOpenAI, prompt: str, question: int, hedge: int) -> float:
    """One hedge: the same question again; returns when its answer arrived."""
    await client.chat.completions.create(
        model=MODEL,
        max_tokens=256,
        messages=[
            {"role": "system", "content": prompt},
            {
                "role": "user",
                "content": f"Customer question #{question}: how do I rotate my API key?",
            },
        ],
    )
    return time.perf_counter()


@dataclass(slots=True)
class _Outcome:
    first_answer_s: list[float]
    reports: list[FanOutReport]
    denials: list[BudgetExceeded]
    capped: bool


async def _without(h: Harness, size: Size, probe: Probe, prompt: str) -> _Outcome:
    client = h.async_openai(probe)
    gate = asyncio.Semaphore(size.parallel)
    first: list[float] = []

    async def question(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            done = await asyncio.gather(*(_ask(client, prompt, i, k) for k in range(size.hedges)))
            first.append(min(done) - started)

    try:
        results = await asyncio.gather(
            *(question(i) for i in range(size.questions)), return_exceptions=True
        )
    finally:
        await h.aclose_clients()
    capped = any(isinstance(r, SafetyCapReached) for r in results)
    return _Outcome(first, [], [], capped)


async def _with(h: Harness, size: Size, probe: Probe, prompt: str, tag: str) -> _Outcome:
    enforcer = h.enforcer(policy(size))
    client = wrap(h.async_openai(probe), enforcer=enforcer)
    gate = asyncio.Semaphore(size.parallel)
    out = _Outcome([], [], [], False)

    async def question(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                async with enforcer.run(_RUN, instance=f"{tag}.{i}") as q:
                    ask = functools.partial(_ask, client, prompt, i)
                    done = await q.amap(ask, range(size.hedges), max_concurrency=size.hedges)
            except BudgetExceeded as denial:
                out.denials.append(denial)
                return
            out.reports.append(done.report)
            out.first_answer_s.append(min(done) - started)

    try:
        async with (
            enforcer.scope("org", ORG, instance=tag),
            enforcer.scope("workflow", _WORKFLOW, instance=tag),
        ):
            results = await asyncio.gather(
                *(question(i) for i in range(size.questions)), return_exceptions=True
            )
    finally:
        await h.aclose_clients()
    out.capped = any(isinstance(r, SafetyCapReached) for r in results)
    return out


def _metrics(probe: Probe, outcome: _Outcome) -> dict[str, Any]:
    return {
        "questions_answered": len(outcome.first_answer_s),
        "first_answer_p95_ms": round(percentile(outcome.first_answer_s, 0.95) * 1000, 1),
        "call_p50_ms": round(probe.percentile_ms(0.5), 1),
        "call_p95_ms": round(probe.percentile_ms(0.95), 1),
        "call_p99_ms": round(probe.percentile_ms(0.99), 1),
        "peak_in_flight": probe.peak_in_flight,
        "hedges_admitted": sorted({r.admitted for r in outcome.reports}),
    }


def _latency_notes(probe: Probe, outcome: _Outcome, questions: int) -> list[str]:
    answered = len(outcome.first_answer_s)
    return [
        f"{answered}/{questions} questions answered; first answer p95 "
        f"{percentile(outcome.first_answer_s, 0.95) * 1000:.0f} ms",
        f"call latency p50 {probe.percentile_ms(0.5):.0f} ms, p95 {probe.percentile_ms(0.95):.0f} "
        f"ms, p99 {probe.percentile_ms(0.99):.0f} ms; peak {probe.peak_in_flight} in flight",
    ]


def run(h: Harness, size: Size = DEMO) -> ScenarioResult:
    """Answer the questions with 12 hedges each, without budgets and under the full stack."""
    h.provider.configure(output_tokens=size.output_tokens)
    prompt = instructions(size.prompt_tokens, "customer Q&A")
    load = LoadModel(size.base_ms, size.capacity)

    # -- without budgets ----------------------------------------------------------------
    probe = Probe(SafetyCap(size.safety_requests), load)
    with h.recording() as rec:
        outcome = asyncio.run(_without(h, size, probe, prompt))
    stop = (
        Stop(None, "the simulator's safety cap")
        if outcome.capped
        else Stop(None, f"nothing: {size.hedges} hedges per question, all sent and billed")
    )
    without = h.variant(
        rec,
        "no budgets",
        stop,
        capped=outcome.capped,
        notes=_latency_notes(probe, outcome, size.questions),
        metrics=_metrics(probe, outcome),
    )
    base_p95 = probe.percentile_ms(0.95)

    # -- with the full stack ------------------------------------------------------------
    tag = h.tag(PATTERN)
    probe = Probe(SafetyCap(size.safety_requests), load)
    with h.recording() as rec:
        outcome = asyncio.run(_with(h, size, probe, prompt, tag))
    truncated = [r for r in outcome.reports if r.truncated]
    if outcome.denials:
        stop = stop_from_denial(outcome.denials[0])
    elif truncated:
        stop = Stop(
            3,
            f"fan_out {size.designed} on run:{_RUN}: {size.hedges} hedges → "
            f"{truncated[0].admitted} per question",
        )
    else:  # pragma: no cover - the policy always truncates 12 hedges
        stop = Stop(None, "nothing")
    if outcome.capped:
        stop = Stop(None, "the simulator's safety cap (not contained)")
    notes = _latency_notes(probe, outcome, size.questions)
    notes.append(
        f"call p95 {base_p95:.0f} ms → {probe.percentile_ms(0.95):.0f} ms with the provider "
        f"load held to {size.parallel * size.designed} in flight"
    )
    budgeted = h.variant(
        rec,
        "execbudget",
        stop,
        capped=outcome.capped,
        notes=notes,
        metrics=_metrics(probe, outcome),
        books=units_to_money(h.books(tag, "workflow:", "cost")),
        problems=h.check_books(tag),
    )
    return ScenarioResult(
        pattern=PATTERN,
        title=TITLE,
        unit="USD",
        budget=amount(size.budget),
        budget_label=(
            f"${amount(size.budget)}/night · fan-out {size.designed}/question · "
            f"{size.parallel * size.designed} in flight"
        ),
        without=without,
        budgeted=budgeted,
        notes=[
            f"{size.questions} questions, hedged {size.designed} → {size.hedges} ways; "
            f"provider latency {size.base_ms:g} ms × (1 + in flight / {size.capacity:g})"
        ],
    )
