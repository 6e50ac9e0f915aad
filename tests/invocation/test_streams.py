"""
Streams: metered as they arrive, cut when the provider writes past the hold (overrun
recorded), and settled on every ending: normal end, error, close, cancellation, or an
iterator dropped unread. The ``make_enforcer`` fixture fails any test that leaves a hold.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import openai
import pytest

import execbudget
from execbudget import ManualClock, OutputBudgetExceeded
from execbudget.testing import FakeProvider

from .conftest import Clients, MakeEnforcer, held, overrun, spent

MINI = "gpt-4o-mini"
HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Tell me about budgets."}]
LIMITS: dict[str, Any] = {
    "scopes": [
        {
            "match": "run:*",
            "limits": {"tokens": 100_000, "output_tokens": 100_000, "cost": "1 USD"},
            "per_call": {"max_output_tokens": 20},
        }
    ]
}


def _ended(fp: FakeProvider) -> list[Any]:
    return fp.wait_until(lambda rs: bool(rs) and all(r.status is not None for r in rs))


# -- cut at the hold -------------------------------------------------------------------------
def test_a_chat_stream_that_ignores_max_tokens_is_cut_and_the_overrun_recorded(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(ignore_max_tokens=400, chunk_delay_ms=2)
    enforcer = make_enforcer(LIMITS)
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    received = []
    with enforcer.run("t"):
        stream = client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        with pytest.raises(OutputBudgetExceeded) as info:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert fp.requests[-1].body["max_completion_tokens"] == 20
    assert stream.cut and stream.settled and info.value.reason == "cap"  # type: ignore[attr-defined]
    record = _ended(fp)[-1]
    assert record.outcome == "disconnected" and record.output_tokens < 400
    assert 20 < spent(enforcer, "output_tokens") <= 22  # the hold, and the chunk that crossed it
    assert overrun(enforcer) > 0
    assert len(received) <= 20


@pytest.mark.parametrize("api", ["responses", "anthropic", "anthropic-helper"])
def test_other_streams_are_cut_too(
    api: str, sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(ignore_max_tokens=400, chunk_delay_ms=2)
    enforcer = make_enforcer(LIMITS)
    with enforcer.run("t"), pytest.raises(OutputBudgetExceeded):
        if api == "responses":
            client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
            for _ in client.responses.create(model=MINI, input="hi", stream=True):
                pass
        elif api == "anthropic":
            ant = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
            for _ in ant.messages.create(model=HAIKU, max_tokens=500, messages=HELLO, stream=True):
                pass
        else:
            ant = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
            with ant.messages.stream(model=HAIKU, max_tokens=500, messages=HELLO) as stream:
                stream.until_done()
    assert _ended(fp)[-1].outcome == "disconnected"
    assert overrun(enforcer) > 0 and held(enforcer) == 0


async def test_an_async_stream_is_cut(fp: FakeProvider, make_enforcer: MakeEnforcer) -> None:
    fp.configure(ignore_max_tokens=400, chunk_delay_ms=2)
    enforcer = make_enforcer(LIMITS)
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            stream = await client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
            with pytest.raises(OutputBudgetExceeded):
                async for _ in stream:
                    pass
    assert overrun(enforcer) > 0


def test_a_stream_within_its_hold_is_not_cut_and_settles_from_reported_usage(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(LIMITS)
    ant = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
    with enforcer.run("t"):
        with ant.messages.stream(model=HAIKU, max_tokens=500, messages=HELLO) as stream:
            final = stream.get_final_message()
    assert final.usage.output_tokens == 20 and overrun(enforcer) == 0
    assert spent(enforcer, "tokens") == final.usage.input_tokens + 20


# -- usage ------------------------------------------------------------------------------------
def test_the_usage_chunk_the_wrapper_asked_for_is_hidden_unless_the_caller_asked(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(LIMITS)
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        plain = list(client.chat.completions.create(model=MINI, messages=HELLO, stream=True))
        asked = list(
            client.chat.completions.create(
                model=MINI, messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
    assert fp.requests[0].body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in plain)
    assert not asked[-1].choices and asked[-1].usage is not None
    assert len(asked) == len(plain) + 1


@pytest.mark.parametrize("api", ["chat", "anthropic"])
def test_a_stream_without_usage_is_counted_locally(
    api: str, sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(omit_usage=True, output_tokens=15)
    enforcer = make_enforcer(LIMITS)
    with enforcer.run("t"):
        if api == "chat":
            client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
            stream: Any = client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        else:
            ant = execbudget.wrap(sdk.anthropic(), enforcer=enforcer)
            stream = ant.messages.create(model=HAIKU, max_tokens=500, messages=HELLO, stream=True)
        for _ in stream:
            pass
    billed = _ended(fp)[-1].output_tokens
    counted = spent(enforcer, "output_tokens")
    if api == "chat":
        assert counted == billed == 15  # exact tokenizer
    else:
        assert billed <= counted <= 20  # an upper estimate, never above the allowance


# -- every ending settles ---------------------------------------------------------------------
def test_an_abandoned_sync_iterator_settles_what_it_received(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=20)
    enforcer = make_enforcer(LIMITS)
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        stream = client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        next(stream)  # the role chunk
        next(stream)  # one token
        assert held(enforcer) > 0
        del stream
        gc.collect()
    assert held(enforcer) == 0
    assert 1 <= spent(enforcer, "output_tokens") <= 2
    assert _ended(fp)[-1].outcome in ("disconnected", "ok")


def test_closing_settles_and_a_with_block_closes(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    enforcer = make_enforcer(LIMITS)
    client = execbudget.wrap(sdk.openai(), enforcer=enforcer)
    with enforcer.run("t"):
        with client.chat.completions.create(model=MINI, messages=HELLO, stream=True) as stream:
            next(stream)
        assert stream.settled  # type: ignore[attr-defined]
        stream = client.responses.create(model=MINI, input="hi", stream=True)
        stream.close()
        assert list(stream) == []
    assert held(enforcer) == 0


async def test_an_abandoned_async_iterator_settles(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=20)
    enforcer = make_enforcer(LIMITS)
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            stream = await client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
            await stream.__anext__()
            await stream.__anext__()
            del stream
            gc.collect()
            for _ in range(200):
                if held(enforcer) == 0:
                    break
                await asyncio.sleep(0.005)
    assert held(enforcer) == 0 and spent(enforcer, "output_tokens") >= 1


async def test_a_cancelled_task_settles_its_stream(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=20, chunk_delay_ms=50)
    enforcer = make_enforcer(LIMITS)
    first = asyncio.Event()

    async def consume(client: Any) -> None:
        stream = await client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        async for chunk in stream:
            # the first chunk may carry only the role: cancel once text was received
            if chunk.choices and chunk.choices[0].delta.content:
                first.set()

    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            task = asyncio.create_task(consume(client))
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert held(enforcer) == 0 and 1 <= spent(enforcer, "output_tokens") < 20


@pytest.mark.parametrize("ledger", ["memory", "sqlite"])
async def test_a_cancelled_non_streamed_call_is_charged_its_whole_hold(
    ledger: str, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(latency_ms=2_000)
    enforcer = make_enforcer(LIMITS, ledger=ledger)
    async with execbudget.wrap(fp.async_openai(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            task = asyncio.create_task(client.chat.completions.create(model=MINI, messages=HELLO))
            await asyncio.to_thread(fp.wait_until, lambda rs: len(rs) == 1)  # it was sent
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    # the provider may have generated the whole allowance: the hold is charged in full
    assert held(enforcer) == 0 and spent(enforcer, "output_tokens") == 20


def test_an_error_mid_stream_settles_what_was_received(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=50, stall_after_chunks=5)
    enforcer = make_enforcer(LIMITS)
    client = execbudget.wrap(sdk.openai(timeout=0.3), enforcer=enforcer, retries=0)
    with enforcer.run("t"):
        stream = client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        with pytest.raises(openai.APITimeoutError):
            for _ in stream:
                pass
    assert held(enforcer) == 0 and spent(enforcer, "output_tokens") == 5


def test_a_long_stream_extends_its_hold(
    sdk: Clients, fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    clock = ManualClock()
    enforcer = make_enforcer({**LIMITS, "hold_ttl": "100s"}, clock=clock)
    client = execbudget.wrap(sdk.openai(timeout=20.0), enforcer=enforcer)
    with enforcer.run("t"):
        stream = client.chat.completions.create(model=MINI, messages=HELLO, stream=True)
        next(stream)
        (record,) = enforcer.ledger.holds()
        clock.advance(60)  # past half of the 100 s TTL
        next(stream)
        (extended,) = enforcer.ledger.holds()
        assert extended.expires_at_ms >= record.expires_at_ms + 59_000
        stream.close()


async def test_the_async_message_stream_helper_is_metered(
    fp: FakeProvider, make_enforcer: MakeEnforcer
) -> None:
    fp.configure(output_tokens=500)
    enforcer = make_enforcer(LIMITS)
    async with execbudget.wrap(fp.async_anthropic(), enforcer=enforcer) as client:
        async with enforcer.run("t"):
            manager = client.messages.stream(model=HAIKU, max_tokens=500, messages=HELLO)
            async with manager as stream:
                text = [piece async for piece in stream.text_stream]
                final = await stream.get_final_message()
    assert text and final.usage.output_tokens == 20 and fp.requests[-1].body["max_tokens"] == 20
    assert spent(enforcer, "tokens") == final.usage.input_tokens + 20
