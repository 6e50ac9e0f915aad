"""
Deadlines that cancel: a 0.5 s run over a provider that never answers ends within 0.5 s
plus ``MARGIN``, async and sync, for one call and for a fan-out.

``MARGIN`` (0.25 s) covers the asyncio timer and loop scheduling, closing the HTTP
connection, and a loaded 2-core machine; typical overshoot measured here is 1–25 ms.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import execbudget
from execbudget import DeadlineExceeded, Enforcer, ManualClock
from execbudget.orchestration import call_with_deadline
from execbudget.testing import FakeProvider

BUDGET_S = 0.5
MARGIN = 0.25
MESSAGES = [{"role": "user", "content": "anything"}]


@pytest.fixture
def hanging(fake_provider: FakeProvider) -> Iterator[FakeProvider]:
    # The first call of a process loads the tokenizer's encoding (~0.5 s, CPU-bound, in the
    # caller's thread): warm it up so the measurement is of the deadline, not of that.
    execbudget.wrap(fake_provider.openai()).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=1
    )
    fake_provider.reset()
    fake_provider.configure(hang=True)
    execbudget.configure(
        {"scopes": [{"match": "run:slow", "limits": {"time": "0.5s"}}]}, "memory://"
    )
    yield fake_provider
    execbudget.configure(None, "memory://")


def check(info: pytest.ExceptionInfo[DeadlineExceeded], started: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed + 0.01 >= BUDGET_S and elapsed < BUDGET_S + MARGIN, elapsed
    assert info.value.limit == "0.5s" and info.value.spent.endswith("s")
    assert "elapsed 0.5" in str(info.value) and "limit 0.5s" in str(info.value)


async def test_an_async_run_over_a_hanging_provider_ends_at_its_deadline(
    hanging: FakeProvider,
) -> None:
    client = execbudget.wrap(hanging.async_openai())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        async with execbudget.run("slow"):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    check(info, started)
    await client.close()


async def test_amap_branches_are_cancelled_at_the_deadline(hanging: FakeProvider) -> None:
    client = execbudget.wrap(hanging.async_openai())

    async def branch(i: int) -> Any:
        return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        async with execbudget.run("slow") as run:
            await run.amap(branch, range(8))
    check(info, started)
    await client.close()
    assert len(hanging.requests) == 8


async def test_amap_alone_cancels_at_the_deadline_of_a_sync_opened_run(
    hanging: FakeProvider,
) -> None:
    """``with`` (not ``async with``) sets no timer: the fan-out applies the deadline itself."""
    started = time.monotonic()
    with execbudget.run("slow") as run, pytest.raises(DeadlineExceeded) as info:
        await run.amap(lambda _: asyncio.Event().wait(), range(4))
    check(info, started)


def test_a_sync_call_to_a_hanging_provider_is_bounded(hanging: FakeProvider) -> None:
    client = execbudget.wrap(hanging.openai())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info, execbudget.run("slow"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    check(info, started)


def test_a_sync_fan_out_returns_at_the_deadline_and_its_hung_calls_end(
    hanging: FakeProvider,
) -> None:
    client = execbudget.wrap(hanging.openai())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info, execbudget.run("slow") as run:
        run.map(
            lambda _: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
            range(6),
        )
    check(info, started)
    # the threads could not be cancelled, but each call's HTTP timeout was the time left
    ended = hanging.wait_until(
        lambda rs: len(rs) == 6 and all(r.outcome != "pending" for r in rs), timeout=BUDGET_S
    )
    assert ended


def test_call_with_deadline_bounds_any_blocking_callable() -> None:
    execbudget.configure(
        {"scopes": [{"match": "run:slow", "limits": {"time": "0.5s"}}]}, "memory://"
    )
    never = threading.Event()
    started = time.monotonic()
    with execbudget.run("slow") as run, pytest.raises(DeadlineExceeded) as info:
        call_with_deadline(run.frame, never.wait)
    check(info, started)
    with execbudget.run("slow") as run:
        assert call_with_deadline(run.frame, lambda: 42) == 42
        with pytest.raises(ZeroDivisionError):
            call_with_deadline(run.frame, lambda: 1 / 0)
    assert call_with_deadline(None, lambda: "no deadline") == "no deadline"


def test_steps_check_the_deadline_between_iterations() -> None:
    clock = ManualClock()
    enforcer = Enforcer(
        {"scopes": [{"match": "run:slow", "limits": {"time": "0.5s"}}]}, "memory://", clock=clock
    )
    with enforcer.run("slow") as run, pytest.raises(DeadlineExceeded) as info:
        for _ in run.steps():
            clock.advance(0.2)
    assert info.value.spent == "0.600s"
