"""
Layer 1, the invocation layer: every model call holds its worst case before it is sent.

    import execbudget, openai

    client = execbudget.wrap(openai.OpenAI())
    with execbudget.run("triage", limits={"cost": "0.50 USD"}):
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

A wrapped call counts its input offline, checks the per-call input cap, lowers
``max_tokens`` to the per-call output cap (and to what the tightest enclosing budget can
afford, when the call is sized from the room), holds the worst case on every scope of the
chain in one atomic step, sends the clamped request with a timeout from the remaining
deadline, and settles the actual usage afterwards. Streams are metered chunk by chunk and
cut if the provider writes past the hold. See docs/invocation.md.

Layout: ``_plan`` (pure admission arithmetic), ``_apis`` (pure per-API adapters),
``_settle`` (pure settlement and the stream meter), ``_failures`` (pure error
classification), ``_procedure`` (the call as a generator of I/O operations, shared by sync
and async), ``_drive`` (the sync and async drivers), ``_streams`` (stream guards),
``_clients`` (the wrapped clients), ``_wrap`` (``wrap``).
"""

from __future__ import annotations

from ._clients import (
    AsyncBudgetedAnthropic,
    AsyncBudgetedOpenAI,
    AsyncMessageStreamManager,
    BudgetedAnthropic,
    BudgetedOpenAI,
    MessageStreamManager,
)
from ._plan import CallRequest, Plan, plan_call
from ._procedure import Settings
from ._streams import AsyncBudgetedStream, BudgetedStream
from ._wrap import wrap

__all__ = [
    "AsyncBudgetedAnthropic",
    "AsyncBudgetedOpenAI",
    "AsyncBudgetedStream",
    "AsyncMessageStreamManager",
    "BudgetedAnthropic",
    "BudgetedOpenAI",
    "BudgetedStream",
    "CallRequest",
    "MessageStreamManager",
    "Plan",
    "Settings",
    "plan_call",
    "wrap",
]
