"""
Retries go through the budget (each charged, each a new call with a new hold), are
bounded, honour the server's retry-after, never retry a denial; deadlines become request
timeouts. Failure classification is tested pure at the end.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2
import openai
import pytest

import execbudget
from execbudget import DeadlineExceeded, RetryBudgetExceeded, StepBudgetExceeded
from execbudget.invocation._apis import CHAT
from execbudget.invocation._failures import backoff_s, classify
from execbudget.testing import FakeProvider

from .conftest import Clients, MakeEnforcer, held, spent

MINI = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hi"}]


def policy(**limits: Any) -> dict[str, Any]:
    return {"scopes": [{"match": "run:*", "limits": {"tokens": 100_000, **limits}}]}


def test_5xx_is_retried_through_the_budget(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=2, error_status=503)
    enforcer = make_enforcer(policy(retries=5, calls=10))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=3)
    with enforcer.run("t"):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert [r.status for r in fp.requests] == [503, 503, 200]
    assert [r.headers["x-stainless-retry-count"] for r in fp.requests] == ["0", "1", "2"]
    assert spent(enforcer, "retries") == 2
    assert spent(enforcer, "calls") == 3  # every attempt is a call (DESIGN §1)
    assert spent(enforcer, "tokens") == fp.requests[-1].input_tokens + 5  # type: ignore[operator]


def test_429_waits_what_the_server_says(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=1, error_status=429, retry_after_ms=120)
    enforcer = make_enforcer(policy())
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=2, backoff_base_s=5.0)
    started = time.monotonic()
    with enforcer.run("t"):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert 0.1 <= time.monotonic() - started < 2.0
    assert [r.status for r in fp.requests] == [429, 200]


def test_retries_are_bounded(sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    fp.configure(fail_next=10, error_status=500)
    enforcer = make_enforcer(policy())
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=1, backoff_base_s=0.001)
    with enforcer.run("t"), pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert len(fp.requests) == 2 and spent(enforcer, "tokens") == 0


def test_the_retry_budget_stops_a_retry_storm(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=10, error_status=500)
    enforcer = make_enforcer(policy(retries=1))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=10, backoff_base_s=0.001)
    with enforcer.run("t"), pytest.raises(RetryBudgetExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert isinstance(info.value.__cause__, openai.InternalServerError)
    assert len(fp.requests) == 2 and spent(enforcer, "retries") == 1


def test_a_client_error_is_not_retried(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=1, error_status=400)
    enforcer = make_enforcer(policy())
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=3)
    with enforcer.run("t"), pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert len(fp.requests) == 1


def test_a_denial_is_never_retried(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=1, error_status=500)
    enforcer = make_enforcer(policy(calls=1))
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=5, backoff_base_s=0.001)
    with enforcer.run("t"), pytest.raises(StepBudgetExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    # the failed attempt was a call; the retry's hold was denied and not tried again
    assert info.value.dimension == "calls" and len(fp.requests) == 1


async def test_async_retries(fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    fp.configure(fail_next=1, error_status=502)
    enforcer = make_enforcer(policy(retries=3))
    async with execbudget.wrap(
        fp.async_openai(), enforcer=enforcer, retries=2, backoff_base_s=0.01
    ) as client:
        async with enforcer.run("t"):
            await client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert [r.status for r in fp.requests] == [502, 200] and spent(enforcer, "retries") == 1


def test_the_sdks_own_retries_are_off(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(fail_next=10, error_status=500)
    enforcer = make_enforcer(policy())
    client = execbudget.wrap(sdk.openai(max_retries=4), enforcer=enforcer, retries=0)
    with enforcer.run("t"), pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert len(fp.requests) == 1


# -- deadlines --------------------------------------------------------------------------------
def test_the_remaining_deadline_becomes_the_request_timeout(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(hang=True)
    enforcer = make_enforcer({"scopes": [{"match": "run:*", "limits": {"tokens": 10_000}}]})
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer, retries=3)
    started = time.monotonic()
    with enforcer.run("t", limits={"time": "0.4s"}), pytest.raises(DeadlineExceeded) as info:
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 1.5 and isinstance(info.value.__cause__, openai.APITimeoutError)
    assert len(fp.requests) == 1  # a deadline is not retried
    assert 0.2 < float(fp.requests[0].headers["x-stainless-read-timeout"]) <= 0.4
    assert spent(enforcer, "tokens") == fp.requests[0].body["max_tokens"] + 8  # whole hold
    fp.configure(hang=False)


async def test_an_async_call_past_its_deadline_is_cancelled(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(hang=True)
    enforcer = make_enforcer({"scopes": [{"match": "run:*", "limits": {"tokens": 10_000}}]})
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        with pytest.raises(DeadlineExceeded):
            async with enforcer.run("t", limits={"time": "0.3s"}):
                await client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5)
    assert held(enforcer) == 0
    fp.configure(hang=False)


def test_the_per_call_timeout_cap(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(
        {
            "scopes": [
                {"match": "run:*", "limits": {"tokens": 10_000}, "per_call": {"timeout": "7s"}}
            ]
        }
    )
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=5, timeout=30)
    assert fp.requests[0].headers["x-stainless-read-timeout"] == "7.0"


# -- classification (pure) ----------------------------------------------------------------
def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError("boom", response=response, body=None)


def test_classification() -> None:
    assert classify(_status_error(503), CHAT).settle == "call"
    assert classify(_status_error(503), CHAT).retryable
    assert not classify(_status_error(400), CHAT).retryable
    assert classify(_status_error(429, {"retry-after-ms": "250"}), CHAT).retry_after_s == 0.25
    assert not classify(_status_error(429, {"retry-after": "3600"}), CHAT).retryable
    assert not classify(_status_error(503, {"x-should-retry": "false"}), CHAT).retryable
    request = httpx2.Request("POST", "http://x")
    try:
        raise openai.APIConnectionError(request=request) from httpx2.ConnectError("refused")
    except openai.APIConnectionError as exc:
        refused = classify(exc, CHAT)
    assert (refused.settle, refused.retryable) == ("release", True)
    try:
        raise openai.APITimeoutError(request=request) from httpx2.ReadTimeout("slow")
    except openai.APITimeoutError as exc:
        timed_out = classify(exc, CHAT)
    assert (timed_out.settle, timed_out.timeout) == ("hold", True)
    assert classify(KeyboardInterrupt(), CHAT).settle == "hold"
    assert classify(TypeError("bad argument"), CHAT).settle == "release"


def test_backoff() -> None:
    assert backoff_s(1, 0.25, base_s=0.5, max_s=8) == 0.25
    assert 0.375 <= backoff_s(1, None, base_s=0.5, max_s=8) <= 0.5
    assert 6.0 <= backoff_s(9, None, base_s=0.5, max_s=8) <= 8.0
