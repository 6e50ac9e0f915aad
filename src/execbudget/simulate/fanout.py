"""
Silent fan-out: a workflow built for 10 items is handed 10,000.

A nightly digest summarises the day's support tickets, one model call per ticket, sixteen
at a time. It was built and priced for about ten tickets; an upstream change hands it the
whole backlog. Nothing in today's frameworks counts branches: LangGraph's ``Send``,
the OpenAI Agents SDK and pydantic-ai limit *parallelism*, never how many branches start
or what they cost together (frameworks.md §5.5; 200 ``Send`` tasks ran under
``recursion_limit=2``).

* **Without budgets**: a ``ThreadPoolExecutor`` over the items with the real openai SDK;
  the simulator's safety cap ends it (it would have made every call).
* **With execbudget**: the same function through ``run.map``: the fan-out is admitted
  against the run's ``fan_out`` budget *before any branch starts*, and refused whole. The
  same policy then runs the ten-item job it was written for.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from .. import wrap
from ..errors import BudgetExceeded
from ..units import units_to_money
from ._harness import Harness, Probe, SafetyCap, SafetyCapReached, instructions, stop_from_denial
from ._policies import MODEL, ORG, amount, org_rule, run_rule
from .model import ScenarioResult, Stop, fmt

if TYPE_CHECKING:
    import openai

__all__ = ["DEMO", "PATTERN", "SMALL", "Size", "run"]

PATTERN: Final = "silent-fan-out"
TITLE: Final = "Silent fan-out"
_RUN: Final = "ticket-digest"


@dataclass(frozen=True, slots=True)
class Size:
    #: items the workflow is handed
    items: int = 10_000
    #: items it was built for
    designed: int = 10
    #: threads (both variants)
    workers: int = 16
    #: provider requests after which the simulator stops the unbudgeted run
    safety_requests: int = 300
    #: the run's fan-out budget: branches started over the run's life
    fan_out: int = 50
    run_cost: str = "0.10 USD"
    prompt_tokens: int = 600
    output_tokens: int = 200


DEMO: Final = Size()
SMALL: Final = Size(items=2_000, workers=4, safety_requests=40, prompt_tokens=300)


def policy(size: Size) -> dict[str, Any]:
    return {
        "scopes": [
            org_rule(),
            run_rule(
                f"run:{_RUN}",
                fan_out=size.fan_out,
                concurrency=size.workers,
                cost=size.run_cost,
                max_output_tokens=256,
            ),
        ]
    }


def _summarise(client: openai.OpenAI, prompt: str, ticket: int) -> str:
    reply = client.chat.completions.create(
        model=MODEL,
        max_tokens=256,
        messages=[
            {"role": "system", "content": prompt},
            {"role": "user", "content": f"Summarise support ticket #{ticket} in two lines."},
        ],
    )
    return reply.choices[0].message.content or ""


def run(h: Harness, size: Size = DEMO) -> ScenarioResult:
    """Hand the workflow ``size.items`` items, without budgets and under the full stack."""
    h.provider.configure(output_tokens=size.output_tokens)
    prompt = instructions(size.prompt_tokens, "support digest")
    items = range(size.items)

    # -- without budgets ----------------------------------------------------------------
    probe = Probe(SafetyCap(size.safety_requests))
    client = h.openai(probe)
    capped = False
    stop = Stop(None, f"nothing: all {size.items:,} items processed")
    with h.recording() as rec, ThreadPoolExecutor(size.workers) as pool:
        try:
            for _ in pool.map(functools.partial(_summarise, client, prompt), items):
                pass
        except SafetyCapReached:
            capped = True
            stop = Stop(
                None,
                f"the simulator's safety cap ({size.safety_requests:,} of {size.items:,} calls)",
            )
        finally:
            pool.shutdown(cancel_futures=True)
    without = h.variant(rec, "no budgets", stop, capped=capped)
    if without.answered:
        projected = without.spend / without.answered * size.items
        without.metrics["projected_spend"] = str(projected.quantize(Decimal("0.0001")))
        without.notes.append(
            f"would have made {size.items:,} calls, about {fmt(projected, 'USD')}, "
            f"for a job priced at about {fmt(projected / size.items * size.designed, 'USD')}"
        )

    # -- with the full stack ------------------------------------------------------------
    enforcer = h.enforcer(policy(size))
    tag = h.tag(PATTERN)
    probe = Probe(SafetyCap(size.safety_requests))
    client = wrap(h.openai(probe), enforcer=enforcer)
    summarise = functools.partial(_summarise, client, prompt)
    capped = False
    stop = Stop(None, f"nothing: all {size.items:,} items processed")
    with h.recording() as rec:
        try:
            with enforcer.scope("org", ORG, instance=tag), enforcer.run(_RUN, instance=tag) as r:
                r.map(summarise, items, max_concurrency=size.workers)
        except BudgetExceeded as denial:
            stop = stop_from_denial(denial)
        except SafetyCapReached:
            capped = True
            stop = Stop(None, "the simulator's safety cap (not contained)")
    budgeted = h.variant(
        rec,
        "execbudget",
        stop,
        capped=capped,
        books=units_to_money(h.books(tag, "run:", "cost")),
    )
    budgeted.notes.append(
        f"refused before the first call: {size.items:,} branches asked, {size.fan_out} allowed"
    )

    # The same policy admits the job the workflow was built for (outside the measurement).
    with (
        h.recording() as ok,
        enforcer.scope("org", ORG, instance=tag),
        enforcer.run(_RUN, instance=f"{tag}.ok") as r,
    ):
        r.map(summarise, range(size.designed), max_concurrency=size.workers)
    budgeted.metrics.update(
        {"intended_job_calls": len(ok.records), "intended_job_spend": str(h.bill(ok.records))}
    )
    budgeted.notes.append(
        f"the same policy then ran the intended {size.designed}-item job: "
        f"{len(ok.records)} calls, {fmt(h.bill(ok.records), 'USD')}"
    )
    budgeted.problems = h.check_books(tag)
    return ScenarioResult(
        pattern=PATTERN,
        title=TITLE,
        unit="USD",
        budget=amount(size.run_cost),
        budget_label=f"${amount(size.run_cost)}/run · fan-out {size.fan_out}",
        without=without,
        budgeted=budgeted,
        notes=[f"{size.items:,} items handed to a {size.designed}-item workflow"],
    )
