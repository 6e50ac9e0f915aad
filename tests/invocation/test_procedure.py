"""
The shared call procedure, driven by hand: no provider, no ledger I/O, every branch of
admission reachable on demand (a lost race, a probe, a downgrade, a failure to settle).
"""

from __future__ import annotations

from collections.abc import Generator
from decimal import Decimal
from typing import Any

import pytest

from execbudget import CostBudgetExceeded, Enforcer, TokenBudgetExceeded
from execbudget.enforcer import Decision, Hold
from execbudget.invocation._apis import CHAT
from execbudget.invocation._procedure import (
    Call,
    ChargeRetry,
    Commit,
    ReadRoom,
    Release,
    Send,
    Settings,
    Sleep,
    TryHold,
    call_procedure,
)
from execbudget.units import money_to_units

MINI = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hi"}]


def make_call(mode: str = "clamp", **kwargs: Any) -> Call:
    enforcer = Enforcer({"degradation": {"mode": mode, "model": MINI}}, "memory://")
    request = {"model": MINI, "messages": HELLO, **kwargs}
    return Call(CHAT, request, False, enforcer, None, Settings(retries=1, backoff_base_s=0.01))


def granted(call: Call, amounts: Any) -> Decision:
    return Decision(Hold(call.enforcer, "rid", [], dict(amounts), None))


def denied(dimension: str = "tokens") -> Decision:
    cls = TokenBudgetExceeded if dimension != "cost" else CostBudgetExceeded
    return Decision(
        None, cls(scope="run:t", dimension=dimension, limit=1, spent=0, held=1, requested=2)
    )


def step(gen: Generator[Any, Any, Any], value: Any = None) -> Any:
    return gen.send(value)


def test_a_lost_race_is_replanned_with_the_smaller_room() -> None:
    call = make_call()
    gen = call_procedure(call)
    assert isinstance(step(gen), ReadRoom)
    first = step(gen, {"tokens": 500})
    assert isinstance(first, TryHold) and first.amounts["tokens"] == 500
    assert isinstance(step(gen, denied()), ReadRoom)  # someone took the room: read again
    second = step(gen, {"tokens": 300})
    assert isinstance(second, TryHold) and second.amounts["tokens"] == 300
    send = step(gen, granted(call, second.amounts))
    assert isinstance(send, Send)
    assert send.kwargs["max_completion_tokens"] == 300 - second.amounts["input_tokens"]


def test_no_progress_means_the_denial_stands() -> None:
    call = make_call()
    gen = call_procedure(call)
    step(gen)
    step(gen, {"tokens": 500})
    step(gen, denied("calls"))
    with pytest.raises(TokenBudgetExceeded):
        step(gen, {"tokens": 500})  # same room: the denial was not about our size


def test_rounds_are_bounded() -> None:
    call = make_call()
    call.settings.admission_rounds = 2
    gen = call_procedure(call)
    step(gen)
    step(gen, {"tokens": 500})
    step(gen, denied())
    step(gen, {"tokens": 400})
    with pytest.raises(TokenBudgetExceeded):
        step(gen, denied())


def test_clamp_holds_a_given_max_tokens_before_reading_the_room() -> None:
    """A clamp only lowers max_tokens: hold it as asked, read the room on a denial."""
    call = make_call(max_tokens=100)
    call.settings.admission_rounds = 1
    gen = call_procedure(call)
    first = step(gen)
    assert isinstance(first, TryHold) and first.amounts["output_tokens"] == 100
    assert isinstance(step(gen, denied()), ReadRoom)  # short of tokens: size from the room
    second = step(gen, {"tokens": first.amounts["input_tokens"] + 40})
    assert isinstance(second, TryHold) and second.amounts["output_tokens"] == 40
    send = step(gen, granted(call, second.amounts))
    assert isinstance(send, Send) and send.kwargs["max_tokens"] == 40


def test_clamp_does_not_read_the_room_when_a_smaller_output_cannot_help() -> None:
    call = make_call(max_tokens=100)
    gen = call_procedure(call)
    step(gen)
    with pytest.raises(TokenBudgetExceeded):
        step(gen, denied("calls"))


def test_clamp_with_room_sends_what_was_asked() -> None:
    call = make_call(max_tokens=100)
    gen = call_procedure(call)
    first = step(gen)
    send = step(gen, granted(call, first.amounts))
    assert isinstance(send, Send) and send.kwargs["max_tokens"] == 100


def test_downgrade_replans_on_the_cheaper_model() -> None:
    call = make_call(mode="downgrade", max_tokens=100)
    call.kwargs = {**call.kwargs, "model": "gpt-4o"}
    gen = call_procedure(call)
    first = step(gen)
    assert isinstance(first, TryHold)  # the requested model, as asked: no room read
    assert isinstance(step(gen, denied("cost")), ReadRoom)
    second = step(gen, {"cost": 10**6})
    assert isinstance(second, TryHold)
    send = step(gen, granted(call, second.amounts))
    assert send.kwargs["model"] == MINI and send.kwargs["max_tokens"] <= 100


def test_a_failed_attempt_settles_then_retries_with_a_new_hold() -> None:
    call = make_call(mode="deny", max_tokens=5)
    gen = call_procedure(call)
    hold_op = step(gen)
    assert isinstance(step(gen, granted(call, hold_op.amounts)), Send)
    settle = gen.throw(TimeoutError("not an SDK error"))
    assert isinstance(settle, Release)  # nothing was sent, as far as we know
    with pytest.raises(TimeoutError):
        step(gen)


def test_unknown_outcomes_charge_the_hold_and_status_errors_one_call() -> None:
    import httpx2
    import openai

    call = make_call(mode="deny", max_tokens=5)
    gen = call_procedure(call)
    hold_op = step(gen)
    step(gen, granted(call, hold_op.amounts))
    request = httpx2.Request("POST", "http://x")
    response = httpx2.Response(503, request=request, headers={"retry-after-ms": "5"})
    settle = gen.throw(openai.APIStatusError("busy", response=response, body=None))
    assert isinstance(settle, Commit) and settle.actual is not None
    assert settle.actual["calls"] == 1 and settle.actual["tokens"] == 0
    assert isinstance(step(gen), ChargeRetry)
    sleep = step(gen)
    assert isinstance(sleep, Sleep) and sleep.seconds == pytest.approx(0.005)
    hold_op = step(gen)
    assert isinstance(hold_op, TryHold)
    send = step(gen, granted(call, hold_op.amounts))
    assert send.kwargs["extra_headers"]["x-stainless-retry-count"] == "1"
    settle = gen.throw(KeyboardInterrupt())
    assert isinstance(settle, Commit) and settle.actual is None  # the whole hold
    with pytest.raises(KeyboardInterrupt):
        step(gen)


def test_a_settlement_failure_after_success_does_not_lose_the_answer() -> None:
    from execbudget import LedgerUnavailable

    call = make_call(mode="deny", max_tokens=5)
    gen = call_procedure(call)
    hold_op = step(gen)
    step(gen, granted(call, hold_op.amounts))
    response = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    commit = step(gen, response)
    assert isinstance(commit, Commit)
    assert commit.actual == {  # in ledger units: 3 x 0.15 + 2 x 0.6 USD per Mtok, in nano-USD
        "cost": money_to_units(
            Decimal(3) * Decimal("0.15") / 10**6 + Decimal(2) * Decimal("0.6") / 10**6
        ),
        "tokens": 5,
        "input_tokens": 3,
        "output_tokens": 2,
        "calls": 1,
    }
    with pytest.raises(StopIteration) as stop:
        gen.throw(LedgerUnavailable("memory://", "down"))
    assert stop.value.value is response
