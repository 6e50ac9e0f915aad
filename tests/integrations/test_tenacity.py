"""
tenacity over the real SDK and the fake provider: a retry storm is bounded by the retry
budget, and a denial is never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
import tenacity
from tenacity import retry_if_exception_type, stop_after_attempt, wait_fixed, wait_none

import execbudget
from execbudget import CostBudgetExceeded, ManualClock, RetryBudgetExceeded
from execbudget.integrations.tenacity import (
    aretrying,
    charge_retries,
    retry_unless_denied,
    retrying,
    stop_on_budget,
)
from execbudget.testing import FakeProvider

from .conftest import MODEL, spent

MESSAGES = [{"role": "user", "content": "hello"}]


def ask(client: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)


def test_a_provider_failing_every_call_is_retried_at_most_the_retry_budget(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(error_rate=1.0, error_status=500)
    enforcer = enforcer_for({"scopes": [{"match": "run:storm", "limits": {"retries": 5}}]})
    client = execbudget.wrap(fake_provider.openai(), retries=0)  # tenacity does the retrying
    with execbudget.run("storm"), pytest.raises(openai.InternalServerError):
        for attempt in retrying(wait=wait_none(), reraise=True):
            with attempt:
                ask(client)
    assert len(fake_provider.requests) == 1 + 5  # the first attempt and five retries
    assert spent(enforcer, "retries") == 5


def test_without_the_budget_the_same_storm_runs_until_tenacity_gives_up(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.configure(error_rate=1.0, error_status=500)
    client = fake_provider.openai()
    with pytest.raises(openai.InternalServerError):
        for attempt in tenacity.Retrying(stop=stop_after_attempt(40), reraise=True):
            with attempt:
                ask(client)
    assert len(fake_provider.requests) == 40


def test_a_denial_is_not_retried_even_by_a_retry_anything_policy(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    enforcer_for({"scopes": [{"match": "run:storm", "limits": {"cost": "0.000001 USD"}}]})
    client = execbudget.wrap(fake_provider.openai(), retries=0)
    attempts = 0

    def call() -> Any:
        nonlocal attempts
        attempts += 1
        return ask(client)

    with execbudget.run("storm"), pytest.raises(CostBudgetExceeded):
        retrying(retry=retry_if_exception_type(Exception), wait=wait_none())(call)
    assert attempts == 1 and fake_provider.requests == []


def test_the_predicate_alone_composes_with_tenacitys_own() -> None:
    execbudget.configure({"scopes": [{"match": "run:x", "limits": {"steps": 0}}]}, "memory://")
    calls = 0

    def step() -> None:
        nonlocal calls
        calls += 1
        execbudget.current().step()  # type: ignore[union-attr]

    policy = tenacity.Retrying(
        retry=retry_unless_denied(retry_if_exception_type()),
        stop=stop_after_attempt(10),
        reraise=True,
    )
    with execbudget.run("x"), pytest.raises(execbudget.StepBudgetExceeded):
        policy(step)
    assert calls == 1


def test_the_before_hook_charges_and_its_denial_escapes_tenacity() -> None:
    enforcer = execbudget.configure(
        {"scopes": [{"match": "run:x", "limits": {"retries": 2}}]}, "memory://"
    )
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    # no budget-aware stop: only the charge before each re-attempt stops the storm
    policy = tenacity.Retrying(before=charge_retries(), stop=stop_after_attempt(100))
    with execbudget.run("x"), pytest.raises(RetryBudgetExceeded):
        policy(flaky)
    assert calls == 3 and spent(enforcer, "retries") == 2


def test_stop_when_the_next_sleep_would_pass_the_deadline() -> None:
    clock = ManualClock()
    execbudget.configure(
        {"scopes": [{"match": "run:x", "limits": {"time": "5s"}}]}, "memory://", clock=clock
    )
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        clock.advance(1.5)
        raise ConnectionError("down")

    with execbudget.run("x"), pytest.raises(ConnectionError):
        retrying(wait=wait_fixed(1), reraise=True, sleep=lambda s: clock.advance(s))(flaky)
    # 1.5 s per attempt + 1 s sleep: after the 2nd attempt (4 s) a sleep would end at 5 s
    assert calls == 2


def test_stop_on_budget_without_a_scope_never_stops() -> None:
    stop = stop_on_budget()
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    assert stop(state) is False


async def test_async_retry_storm_is_bounded(
    fake_provider: FakeProvider, enforcer_for: Callable[..., Any]
) -> None:
    fake_provider.configure(error_rate=1.0, error_status=503)
    enforcer_for({"scopes": [{"match": "run:storm", "limits": {"retries": 3}}]})
    client = execbudget.wrap(fake_provider.async_openai(), retries=0)
    async with execbudget.run("storm"):
        with pytest.raises(openai.APIStatusError):
            async for attempt in aretrying(
                stop=stop_after_attempt(50), wait=wait_none(), reraise=True
            ):
                with attempt:
                    await client.chat.completions.create(
                        model=MODEL, messages=MESSAGES, max_tokens=16
                    )
    assert len(fake_provider.requests) == 4
    await client.close()
