"""
The token-count property: on every request of a varied corpus, through the real SDKs,
the hold bounds what the fake provider bills (input, output, tokens and cost), so no
line ever records an overrun. The measured over-count of the held input is checked
against the documented envelope (docs/invocation.md gives the figures).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from typing import Any

import pytest

import execbudget
from execbudget import Enforcer
from execbudget.testing import FakeProvider

from .conftest import Clients, MakeEnforcer, held, overrun

TEXTS = [
    "Budgets are held before the spend, not reported after it.",
    "def reserve(ledger, scope, amount):\n    for line in ledger.chain(scope):\n"
    "        if line.spent + line.held + amount > line.limit:\n            raise Exceeded\n",
    json.dumps({"tenant": "acme", "limits": {"cost": "0.50 USD", "steps": [1, 2, 3]}}),
    "预算在调用之前被保留。日本語の文章もここに含まれます。한국어 문장도 포함되어 있습니다.",
    "Бюджет удерживается до вызова. الميزانية محجوزة. बजट कॉल से पहले रोका जाता है।",
    "🎉🔥👍🏽 👨‍👩‍👧‍👦 ✅❌ 🤖💸📈 ❤️‍🔥",
    "camelCaseIdentifiersLikeThisOne andHTTPServerErrors XMLHttpRequest " * 3,
    "x" * 300 + "    " * 40 + "\n\n\n\n" * 10,
    "The quick brown fox jumps over the lazy dog. " * 30,
    "0123456789 " * 20 + "3.14159265358979 2.71828 1e-9",
]
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_budget",
        "description": "Look up the remaining budget of a scope.",
        "parameters": {
            "type": "object",
            "properties": {
                "scope": {"type": "string", "description": "e.g. org:acme"},
                "dimension": {"type": "string", "enum": ["cost", "tokens", "steps"]},
            },
            "required": ["scope"],
        },
    },
}
ANTHROPIC_TOOL = {
    "name": "lookup_budget",
    "description": "Look up the remaining budget of a scope.",
    "input_schema": TOOL["function"]["parameters"],  # type: ignore[index]
}


def chat_requests(model: str) -> Iterator[dict[str, Any]]:
    for i, text in enumerate(TEXTS):
        yield {"messages": [{"role": "user", "content": text}]}
        yield {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": text, "name": f"user{i}"},
                {"role": "assistant", "content": TEXTS[(i + 1) % len(TEXTS)]},
                {"role": "user", "content": "And then?"},
            ]
        }
        yield {
            "messages": [
                {"role": "user", "content": text},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {"name": "lookup_budget", "arguments": '{"scope":"x"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"call_{i}", "content": TEXTS[i - 1]},
            ],
            "tools": [TOOL],
        }


def anthropic_requests() -> Iterator[dict[str, Any]]:
    for i, text in enumerate(TEXTS):
        yield {"messages": [{"role": "user", "content": text}]}
        yield {
            "system": "You are terse. " + TEXTS[i - 1][:80],
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": TEXTS[(i + 2) % len(TEXTS)]},
                {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
            ],
        }
        yield {
            "tools": [ANTHROPIC_TOOL],
            "messages": [
                {"role": "user", "content": text},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": f"t{i}",
                            "name": "lookup_budget",
                            "input": {"scope": "org:acme"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": f"t{i}", "content": TEXTS[i - 1]}
                    ],
                },
            ],
        }


def reserved_and_charged(enforcer: Enforcer) -> list[tuple[dict[str, int], dict[str, int]]]:
    """Per call, in order: what was held and what was charged, per dimension."""
    reserved: dict[str, dict[str, int]] = {}
    charged: dict[str, dict[str, int]] = {}
    order: list[str] = []
    for event in enforcer.ledger.events(limit=100_000):
        per_dim: dict[str, int] = {}
        for key, amount in event.amounts.items():
            per_dim[key.dimension] = max(amount, per_dim.get(key.dimension, 0))
        if event.kind == "reserve":
            reserved[event.rid] = per_dim
            order.append(event.rid)
        elif event.kind == "commit":
            charged[event.rid] = per_dim
    return [(reserved[rid], charged[rid]) for rid in order]


POLICY = {
    "scopes": [
        {
            "match": "run:*",
            "limits": {
                "cost": "100 USD",
                "tokens": "100M",
                "input_tokens": "100M",
                "output_tokens": "100M",
            },
        }
    ]
}
RATIOS: dict[str, list[float]] = {}


@pytest.mark.parametrize("family", ["gpt-4o-mini", "gpt-4", "claude-haiku-4-5", "embeddings"])
def test_the_hold_bounds_the_billed_usage_on_every_request(
    family: str, sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=40, tool_call_policy="never")
    enforcer = make_enforcer(POLICY)
    with enforcer.run("corpus"):
        if family.startswith("claude"):
            ant = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
            for request in anthropic_requests():
                ant.messages.create(model=family, max_tokens=64, **request)
            for request in anthropic_requests():  # streamed, counted as it arrives
                for _ in ant.messages.create(model=family, max_tokens=64, stream=True, **request):
                    pass
        elif family == "embeddings":
            client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
            for text in TEXTS:
                client.embeddings.create(model="text-embedding-3-small", input=[text, text[:9]])
        else:
            client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
            for request in chat_requests(family):
                client.chat.completions.create(model=family, max_tokens=64, **request)
            for text in TEXTS:
                client.responses.create(model=family, input=text, instructions="Be brief.")
                for _ in client.chat.completions.create(
                    model=family, messages=[{"role": "user", "content": text}], stream=True
                ):
                    pass
    records = fp.requests
    pairs = reserved_and_charged(enforcer)
    assert len(pairs) == len(records) > 0
    ratios = []
    for (hold, charge), record in zip(pairs, records, strict=True):
        billed_in, billed_out = record.input_tokens or 0, record.output_tokens or 0
        assert charge["input_tokens"] == billed_in and charge["output_tokens"] == billed_out
        assert hold["input_tokens"] >= billed_in, (family, record.body)
        assert hold["output_tokens"] >= billed_out
        assert hold["tokens"] >= billed_in + billed_out and hold["cost"] >= charge["cost"]
        ratios.append(hold["input_tokens"] / billed_in)
    assert overrun(enforcer) == 0 and held(enforcer) == 0
    RATIOS[family] = ratios
    worst = max(ratios)
    if family == "claude-haiku-4-5":
        assert worst < 4.0  # an estimate built to bound; docs/invocation.md has the figures
    elif family == "embeddings":
        assert worst == 1.0  # exact
    else:
        assert statistics.median(ratios) < 1.1 and worst < 2.5  # exact text, bounded framing
