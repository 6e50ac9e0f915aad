"""
Partial budget enforcement: a platform spend cap alone, against the full stack.

Acme caps its org's spend per day, as every gateway offers (gateways.md §2), and nothing
else. A support agent's billing tool times out; the agent (a hand-written loop over the
real openai SDK, the most common "framework") keeps calling it. The platform cap is
exact here, since it is execbudget's own platform layer holding before each call, so the
org never overspends; and yet the failure is complete: one runaway run spends the whole
org's day, at machine speed, and every other workload of the org is refused until
midnight. Users ask for exactly this: "an org-level monthly budget is too coarse"
(openai-agents-python#3353, frameworks.md §4); "$0.50/month … single run spent $5.11"
(paperclip#11276, gateways.md W20). ``execbudget audit`` flags such a policy as partial
enforcement.

* **Platform cap only**: the org's daily cap, no run budgets. Same agent code.
* **With execbudget**: the same org cap, plus the run's step and spend budgets (and the
  rest of the stack): the run stops at its own budget and the org keeps serving.

The pattern's spend is the runaway run's; its budget is the run budget the full stack
holds it to. After the run, other teams of the org send requests: the report counts how
many were served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import wrap
from ..audit import audit
from ..enforcer import Enforcer
from ..errors import BudgetExceeded
from ..policy import Policy
from ..units import units_to_money
from ._harness import Harness, Probe, SafetyCap, SafetyCapReached, instructions, stop_from_denial
from ._policies import MODEL, ORG, amount, org_rule, run_rule
from .model import ScenarioResult, Stop, Variant, fmt

if TYPE_CHECKING:
    import openai

__all__ = ["DEMO", "PATTERN", "SMALL", "Size", "run"]

PATTERN: Final = "partial-enforcement"
TITLE: Final = "Partial budget enforcement"
_RUN: Final = "support-agent"
_OTHER: Final = "billing-summary"
_TOOLS: Final[list[Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_invoice",
            "description": "Fetch an invoice and its payments from the billing system.",
            "parameters": {
                "type": "object",
                "properties": {"invoice_id": {"type": "string"}},
                "required": ["invoice_id"],
            },
        },
    }
]


@dataclass(frozen=True, slots=True)
class Size:
    #: the org's daily spend cap (the platform layer)
    org_day: str = "0.50 USD"
    #: the support agent's run budget under the full stack
    run_cost: str = "0.10 USD"
    steps: int = 12
    #: other teams' requests after the runaway
    others: int = 20
    prompt_tokens: int = 1_500
    safety_requests: int = 600


DEMO: Final = Size()
SMALL: Final = Size(
    org_day="0.20 USD",
    run_cost="0.05 USD",
    steps=6,
    others=10,
    prompt_tokens=600,
    safety_requests=200,
)


def platform_only(size: Size) -> dict[str, Any]:
    """What many deployments have: an org spend cap per day, and nothing else."""
    return {"scopes": [org_rule(size.org_day)]}


def full_stack(size: Size) -> dict[str, Any]:
    return {
        "scopes": [
            org_rule(size.org_day),
            run_rule(f"run:{_RUN}", steps=size.steps, cost=size.run_cost, max_output_tokens=256),
            run_rule(f"run:{_OTHER}", steps=4, cost="0.05 USD", max_output_tokens=256),
        ]
    }


def _support_agent(client: openai.OpenAI, prompt: str, enforcer: Enforcer, tag: str) -> None:
    """The agent loop: call the model, run the tools it asks for, repeat until it answers."""
    # Plain dicts, as most hand-written loops keep them (the SDK's TypedDicts are optional).
    messages: list[Any] = [
        {"role": "system", "content": prompt},
        {"role": "user", "content": "Why was invoice 1182 charged twice?"},
    ]
    with enforcer.run(_RUN, instance=tag) as run:
        for _ in run.steps():  # a step budget, if the policy has one
            reply = client.chat.completions.create(
                model=MODEL,
                messages=messages,
                tools=_TOOLS,
                max_tokens=256,
            )
            message = reply.choices[0].message
            calls = message.tool_calls or []
            messages.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": c.function.name,  # type: ignore[union-attr]
                                "arguments": c.function.arguments,  # type: ignore[union-attr]
                            },
                        }
                        for c in calls
                    ],
                }
            )
            if not calls:
                return
            for call in calls:  # the billing API is down: the error goes back to the model
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": "error: billing API timed out",
                    }
                )


def _others(client: openai.OpenAI, prompt: str, enforcer: Enforcer, tag: str, count: int) -> int:
    """
    Other teams' requests after the runaway (one call each, the same size as the agent's
    first); returns how many were served.
    """
    served = 0
    for i in range(count):
        try:
            with enforcer.run(_OTHER, instance=f"{tag}.{i}"):
                client.chat.completions.create(
                    model=MODEL,
                    max_tokens=256,
                    messages=[
                        {"role": "system", "content": prompt},
                        {"role": "user", "content": f"Summarise account {i}'s bill."},
                    ],
                )
        except BudgetExceeded:
            continue
        served += 1
    return served


def _variant(h: Harness, size: Size, mode: str, policy: dict[str, Any], tag: str) -> Variant:
    h.provider.configure(tool_call_policy="always")
    enforcer = h.enforcer(policy)
    probe = Probe(SafetyCap(size.safety_requests))
    client = wrap(h.openai(probe), enforcer=enforcer)
    prompt = instructions(size.prompt_tokens, "support")
    capped = False
    stop = Stop(None, "the agent answered")
    with enforcer.scope("org", ORG, instance=tag):
        with h.recording() as rec:
            try:
                _support_agent(client, prompt, enforcer, tag)
            except BudgetExceeded as denial:
                stop = stop_from_denial(denial)
            except SafetyCapReached:
                capped = True
                stop = Stop(None, "the simulator's safety cap")
        h.provider.configure(tool_call_policy="never")
        served = _others(client, prompt, enforcer, tag, size.others)
    result = Policy.from_dict(policy)
    report = audit(result)
    gaps = [f for f in report.findings if f.severity == "gap"]
    partial = any("partial enforcement" in f.message for f in gaps)
    verdict = (
        "passes"
        if report.ok
        else f"{len(gaps)} gaps{', partial enforcement flagged' if partial else ''}"
    )
    org_spent = units_to_money(h.books(tag, "org:", "cost"))
    run_books = units_to_money(h.books(tag, f"run:{_RUN}#", "cost"))
    variant = h.variant(
        rec,
        mode,
        stop,
        capped=capped,
        books=run_books if mode == "execbudget" else None,
        problems=h.check_books(tag),
        metrics={
            "org_spent": str(org_spent),
            "others_served": served,
            "others": size.others,
            "audit_ok": report.ok,
            "audit_gaps": len(gaps),
            "partial_enforcement_flagged": partial,
        },
        notes=[
            f"org spent {fmt(org_spent, 'USD')} of its {fmt(amount(size.org_day), 'USD')} day; "
            f"then {served}/{size.others} requests of other teams served",
            f"execbudget audit of this policy: {verdict}",
        ],
    )
    if stop.layer == 4:
        variant.stop = Stop(4, f"{stop.what}, the whole org's day")
    return variant


def run(h: Harness, size: Size = DEMO) -> ScenarioResult:
    """The runaway support agent under the platform cap only, then under the full stack."""
    without = _variant(h, size, "platform cap only", platform_only(size), h.tag(f"{PATTERN}-p"))
    budgeted = _variant(h, size, "execbudget", full_stack(size), h.tag(PATTERN))
    return ScenarioResult(
        pattern=PATTERN,
        title=TITLE,
        unit="USD",
        budget=amount(size.run_cost),
        budget_label=f"${amount(size.run_cost)}/run · {size.steps} steps · org "
        f"${amount(size.org_day)}/day",
        without=without,
        budgeted=budgeted,
        notes=["hand-written agent loop over the real openai SDK; billing tool down"],
    )
