"""
Retry storm: the provider fails every call, and every layer of the client retries.

An ingestion job sends 40 documents through a model, eight at a time. The provider is
down (503 on every call). Each layer retries on its own: the SDK (``max_retries=5``) and
the application's tenacity decorator (6 attempts) multiply into 36 attempts per doomed
call, the figure cognee measured in production: "HTTP requests per doomed logical LLM
call ~36 … budget rejections 93% of gateway traffic" (topoteretes/cognee#4679,
gateways.md W21). Failed calls bill no tokens, so the storm's spend is counted in
provider requests: rate limit, capacity and time, taken from a provider that is already
down and from every other workload sharing the key. Backoffs are compressed to
milliseconds so the demo ends quickly; the request counts are those of real settings.

* **Without budgets**: ``openai.OpenAI(max_retries=5)`` inside ``tenacity.Retrying``
  (6 attempts).
* **With execbudget**: the same settings through ``execbudget.wrap`` (the SDK's retries
  become budgeted retries) and ``execbudget.integrations.tenacity.retrying`` (each
  re-attempt charged, a denial never retried), under a run budget of 10 retries and 60
  calls: once the retries are spent, each document fails fast after one attempt.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import tenacity

from .. import wrap
from ..errors import BudgetExceeded
from ._harness import Harness, Probe, SafetyCap, SafetyCapReached, stop_from_denial
from ._policies import MODEL, ORG, org_rule, run_rule
from .model import ScenarioResult, Stop

if TYPE_CHECKING:
    import openai

__all__ = ["DEMO", "PATTERN", "SMALL", "Size", "run"]

PATTERN: Final = "retry-storm"
TITLE: Final = "Retry storm"
_RUN: Final = "ingest"


@dataclass(frozen=True, slots=True)
class Size:
    documents: int = 40
    workers: int = 8
    #: the SDK's max_retries and the application's tenacity attempts (both variants)
    sdk_retries: int = 5
    attempts: int = 6
    #: the run's budgets under the full stack
    retries: int = 10
    calls: int = 60
    safety_requests: int = 5_000


DEMO: Final = Size()
SMALL: Final = Size(documents=10, workers=4, sdk_retries=2, attempts=3, retries=4, calls=20)


def policy(size: Size) -> dict[str, Any]:
    return {
        "scopes": [
            org_rule(),
            run_rule(
                f"run:{_RUN}",
                retries=size.retries,
                calls=size.calls,
                fan_out=size.documents,
                concurrency=size.workers,
                max_output_tokens=256,
            ),
        ]
    }


def _extract(client: openai.OpenAI, retrying: Any, document: int) -> str:
    """The application's call: tenacity around the SDK, as written in many codebases."""
    for attempt in retrying():
        with attempt:
            reply = client.chat.completions.create(
                model=MODEL,
                max_tokens=256,
                messages=[
                    {"role": "user", "content": f"Extract the parties of contract {document}."}
                ],
            )
            return reply.choices[0].message.content or ""
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _wait() -> tenacity.wait.wait_base:
    # Real code waits seconds; the simulator compresses time, not attempts.
    return tenacity.wait_exponential(multiplier=0.001, max=0.005)


def run(h: Harness, size: Size = DEMO) -> ScenarioResult:
    """Ingest the documents from a provider that is down, without budgets and with them."""
    import openai

    from ..integrations.tenacity import retrying

    h.provider.configure(error_rate=1.0, error_status=503, retry_after_ms=1)
    retry_on = tenacity.retry_if_exception_type(openai.APIError)
    per_call = size.attempts * (size.sdk_retries + 1)

    # -- without budgets ----------------------------------------------------------------
    probe = Probe(SafetyCap(size.safety_requests))
    client = h.openai(probe, max_retries=size.sdk_retries)
    plain = functools.partial(
        tenacity.Retrying,
        stop=tenacity.stop_after_attempt(size.attempts),
        wait=_wait(),
        retry=retry_on,
        reraise=True,
    )

    def extract_or_fail(document: int) -> BaseException | str:
        try:
            return _extract(client, plain, document)
        except openai.APIError as exc:
            return exc

    capped = False
    with h.recording() as rec, ThreadPoolExecutor(size.workers) as pool:
        try:
            list(pool.map(extract_or_fail, range(size.documents)))
        except SafetyCapReached:
            capped = True
    stop = (
        Stop(None, "the simulator's safety cap")
        if capped
        else Stop(
            None,
            f"nothing: each document gave up after {size.attempts} × {size.sdk_retries + 1} "
            f"= {per_call} attempts",
        )
    )
    without = h.variant(
        rec,
        "no budgets",
        stop,
        capped=capped,
        money=False,
        metrics={"attempts_per_call": per_call},
        notes=[f"{size.documents} documents × {per_call} attempts; all failed, none billed tokens"],
    )

    # -- with the full stack ------------------------------------------------------------
    enforcer = h.enforcer(policy(size))
    tag = h.tag(PATTERN)
    probe = Probe(SafetyCap(size.safety_requests))
    client = wrap(h.openai(probe, max_retries=size.sdk_retries), enforcer=enforcer)
    budgeted_retrying = functools.partial(
        retrying,
        stop=tenacity.stop_after_attempt(size.attempts),
        wait=_wait(),
        retry=retry_on,
        reraise=True,
    )
    extract = functools.partial(_extract, client, budgeted_retrying)
    capped = False
    results: list[Any] = []
    with h.recording() as rec:
        try:
            with enforcer.scope("org", ORG, instance=tag), enforcer.run(_RUN, instance=tag) as r:
                results = r.map(
                    extract,
                    range(size.documents),
                    max_concurrency=size.workers,
                    return_exceptions=True,
                )
        except SafetyCapReached:
            capped = True
    denials = [x for x in results if isinstance(x, BudgetExceeded)]
    failed = [x for x in results if isinstance(x, Exception)]
    if capped:
        stop = Stop(None, "the simulator's safety cap (not contained)")
    elif denials:
        stop = stop_from_denial(denials[0])
    else:  # pragma: no cover - the retry budget is always spent by a provider that is down
        stop = Stop(None, "nothing")
    budgeted = h.variant(
        rec,
        "execbudget",
        stop,
        capped=capped,
        money=False,
        books=Decimal(h.books(tag, "run:", "calls")),
        problems=h.check_books(tag),
        metrics={
            "retries_spent": h.books(tag, "run:", "retries"),
            "failed": len(failed),
            "failed_fast": len(denials),
        },
        notes=[
            f"{len(failed)}/{size.documents} documents failed (the provider is down), "
            f"{len(denials)} on a denied retry instead of {per_call} attempts; "
            f"{h.books(tag, 'run:', 'retries')} retries spent in all",
        ],
    )
    return ScenarioResult(
        pattern=PATTERN,
        title=TITLE,
        unit="requests",
        budget=Decimal(size.calls),
        budget_label=f"{size.calls} calls/run · {size.retries} retries",
        without=without,
        budgeted=budgeted,
        notes=["openai SDK retries × tenacity retries; provider answers 503 to every call"],
    )
