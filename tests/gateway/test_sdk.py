"""
Real ``openai`` and ``anthropic`` SDK clients through the gateway (uvicorn on loopback) to
the fake provider: calls, streams, denials the SDK does not retry, cut streams, kills.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from execbudget.pricing import PriceBook, Usage
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units

from ._harness import line, wait_no_holds
from .conftest import GatewayFactory

MINI = "gpt-4o-mini"
HAIKU = "claude-3-5-haiku-latest"
MESSAGES = [{"role": "user", "content": "Say something about budgets."}]
ACME_POLICY = {"scopes": [{"match": "org:acme", "limits": {"cost": "1 USD", "calls": 100}}]}


def cost_units(
    model: str, input_tokens: int, output_tokens: int, provider: str | None = None
) -> int:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return money_to_units(PriceBook().cost(model, usage, provider))


# -- OpenAI ----------------------------------------------------------------------------------
def test_chat_call_holds_clamps_and_settles_usage(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MINI, messages=MESSAGES, max_tokens=50
        )
    reply = raw.parse()
    assert reply.choices[0].message.content
    sent = fake_provider.requests[-1]
    assert sent.body["max_tokens"] == 50
    usage = reply.usage
    assert usage is not None
    spent = cost_units(MINI, usage.prompt_tokens, usage.completion_tokens)
    # the settlement is written just after the answer leaves (docs/gateway.md)
    assert not wait_no_holds(gw.ledger)
    org = line(gw.ledger, "org:acme", "cost")
    assert org is not None and (org.spent, org.held) == (spent, 0)
    headers = raw.headers
    assert headers["x-execbudget-remaining-scope"] == "org:acme"
    remaining = Decimal(headers["x-execbudget-remaining-cost"])
    assert money_to_units(Decimal(1) - remaining) == spent  # after settlement, exact
    assert headers["x-execbudget-remaining-calls"] == "99"
    assert headers["x-execbudget-max-tokens"] == "50"
    # the gateway line of every scope counted the call
    assert line(gw.ledger, "key:acme-bot", "calls", "gateway").spent == 1  # type: ignore[union-attr]
    assert line(gw.ledger, "model:gpt-4o-mini", "calls", "gateway").spent == 1  # type: ignore[union-attr]


def test_chat_stream_is_relayed_and_settled_from_usage(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        stream = client.chat.completions.create(
            model=MINI, messages=MESSAGES, max_tokens=40, stream=True
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    # the gateway asked upstream for usage; the client did not, so it never sees that chunk
    assert fake_provider.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)
    assert not wait_no_holds(gw.ledger)
    record = fake_provider.requests[-1]
    assert record.input_tokens is not None and record.output_tokens is not None
    org = line(gw.ledger, "org:acme", "cost")
    assert org is not None
    assert org.spent == cost_units(MINI, record.input_tokens, record.output_tokens)


def test_responses_and_embeddings(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        answer = client.responses.create(model=MINI, input="hello", max_output_tokens=32)
        assert answer.output_text
        events = list(
            client.responses.create(model=MINI, input="hello", max_output_tokens=32, stream=True)
        )
        assert events[-1].type == "response.completed"
        vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(vectors.data) == 2
    assert not wait_no_holds(gw.ledger)
    assert line(gw.ledger, "org:acme", "calls").spent == 3  # type: ignore[union-attr]


def test_denial_is_402_with_the_whole_story_and_never_retried(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    policy = {"scopes": [{"match": "team:acme/*", "limits": {"cost": {"day": "0.0001 USD"}}}]}
    gw = gateway_factory(policy)
    before = gw.gateway.metrics.requests.labels("/v1/chat/completions", "402")._value.get()
    with gw.openai(max_retries=3) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4000)
    err = caught.value
    assert err.status_code == 402
    assert err.response.headers["x-should-retry"] == "false"
    assert int(err.response.headers["retry-after"]) > 0  # a day window resets
    body: Any = err.body
    assert body["type"] == "budget_exceeded"
    for field in ("scope", "dimension", "limit", "spent", "held", "requested", "resets_at"):
        assert field in body, field
    assert body["scope"] == "team:acme/search" and body["dimension"] == "cost"
    # one request reached the gateway (no SDK retry), none reached the provider; the
    # access log and its metrics are written once the answer is out, so wait for them
    requests = gw.gateway.metrics.requests.labels("/v1/chat/completions", "402")
    deadline = time.monotonic() + 5
    while requests._value.get() == before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert requests._value.get() - before == 1
    assert fake_provider.requests == []
    assert gw.ledger.holds() == []


def test_anthropic_denial_is_not_retried(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    policy = {"scopes": [{"match": "key:acme-bot", "limits": {"output_tokens": 10}}]}
    gw = gateway_factory(policy)
    with gw.anthropic(max_retries=3) as client, pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=HAIKU, messages=MESSAGES, max_tokens=500)
    assert caught.value.status_code == 402
    error: Any = caught.value.body
    assert error["type"] == "error" and error["error"]["type"] == "budget_exceeded"
    assert error["error"]["scope"] == "key:acme-bot"
    assert fake_provider.requests == []


# -- Anthropic -------------------------------------------------------------------------------
def test_messages_call_and_stream(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    gw = gateway_factory(ACME_POLICY)
    with gw.anthropic() as client:
        message = client.messages.create(model=HAIKU, messages=MESSAGES, max_tokens=64)
        assert message.content[0].type == "text"
        with client.messages.stream(model=HAIKU, messages=MESSAGES, max_tokens=64) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    assert not wait_no_holds(gw.ledger)
    expected = sum(
        cost_units(HAIKU, r.input_tokens or 0, r.output_tokens or 0) for r in fake_provider.requests
    )
    assert line(gw.ledger, "org:acme", "cost").spent == expected  # type: ignore[union-attr]


def test_sized_from_the_room_when_max_tokens_is_absent(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    policy = {"scopes": [{"match": "key:acme-bot", "limits": {"output_tokens": 300}}]}
    gw = gateway_factory(policy)
    with gw.openai() as client:
        client.chat.completions.create(model=MINI, messages=MESSAGES)
    assert fake_provider.requests[-1].body["max_completion_tokens"] == 300


# -- streams the gateway ends ------------------------------------------------------------------
def test_stream_whose_upstream_ignores_max_tokens_is_cut(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(ignore_max_tokens=400)
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        chunks = list(
            client.chat.completions.create(
                model=MINI, messages=MESSAGES, max_tokens=20, stream=True
            )
        )
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length"
    assert (
        last.model_extra is not None and last.model_extra["execbudget"]["cut"] == "output_past_hold"
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    from execbudget.pricing import TokenCounter

    assert TokenCounter().count_text(text, MINI) <= 20  # nothing past the hold reached us
    assert not wait_no_holds(gw.ledger)
    # the overrun the provider made is recorded, not lost, and blocks the line
    org = line(gw.ledger, "org:acme", "cost")
    assert org is not None and org.overrun > 0 and org.blocked == "overrun"
    assert gw.gateway.metrics.streams_cut.labels("output_past_hold")._value.get() == 1
    fake_provider.configure(ignore_max_tokens=None)
    with gw.openai() as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MINI, messages=MESSAGES, max_tokens=5)
    body: Any = caught.value.body
    assert caught.value.status_code == 402 and body["reason"] == "overrun"
    # an operator looks, then lifts the block
    lifted = gw.admin("POST", "/admin/v1/unblock", json={"scope": "org:acme"}).json()
    assert lifted["unblocked"] == ["org:acme/total/cost"]
    with gw.openai() as client:
        client.chat.completions.create(model=MINI, messages=MESSAGES, max_tokens=5)


def test_anthropic_stream_is_cut_with_max_tokens_stop(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(ignore_max_tokens=600)
    gw = gateway_factory(ACME_POLICY)
    with gw.anthropic() as client:
        with client.messages.stream(model=HAIKU, messages=MESSAGES, max_tokens=30) as stream:
            list(stream.text_stream)
            final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert not wait_no_holds(gw.ledger)


def _consume(stream: Any, seen: list[Any], error: list[BaseException]) -> None:
    try:
        for chunk in stream:
            seen.append(chunk)
    except BaseException as exc:
        error.append(exc)


def test_kill_switch_stops_a_stream_in_flight_and_the_next_request(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(output_tokens=400, chunk_delay_ms=20)
    gw = gateway_factory(ACME_POLICY)
    seen: list[Any] = []
    error: list[BaseException] = []
    with gw.openai() as client:
        stream = client.chat.completions.create(
            model=MINI, messages=MESSAGES, max_tokens=400, stream=True
        )
        reader = threading.Thread(target=_consume, args=(stream, seen, error))
        reader.start()
        while len(seen) < 3:
            time.sleep(0.005)
        killed_at = time.monotonic()
        assert gw.admin("POST", "/admin/v1/kill", json={"scope": "key:acme-bot"}).status_code == 200
        reader.join(timeout=5)
        stopped_in = time.monotonic() - killed_at
        assert not reader.is_alive()
        assert isinstance(error[0], openai.APIError) and "kill switch" in str(error[0])
        assert stopped_in < 2.5  # the stream alone would run ~8 s (400 chunks, 20 ms apart)
        assert len(seen) < 100
        # the next request, on any key of the killed scope, is refused before upstream
        fake_provider.clear_requests()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=MINI, messages=MESSAGES, max_tokens=5)
        assert caught.value.status_code == 402
        body: Any = caught.value.body
        assert body["reason"] == "killed" and body["scope"] == "key:acme-bot"
        assert fake_provider.requests == []
        assert gw.admin("GET", "/admin/v1/kills").json()["killed"] == ["key:acme-bot"]
        assert (
            gw.admin("POST", "/admin/v1/revive", json={"scope": "key:acme-bot"}).status_code == 200
        )
        client.chat.completions.create(model=MINI, messages=MESSAGES, max_tokens=5)
    assert not wait_no_holds(gw.ledger)
    # what the killed stream delivered was charged, no more than its hold
    assert gw.gateway.metrics.streams_cut.labels("killed")._value.get() == 1


def test_kill_from_another_gateway_cuts_a_silent_stream(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider, tmp_path: Any
) -> None:
    """Two gateways on one SQLite ledger; the stream's upstream stalls (no chunks come)."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    fake_provider.configure(output_tokens=200, stall_after_chunks=2)
    streaming = gateway_factory(ACME_POLICY, ledger_url=url, kill_poll_s=0.05)
    admin = gateway_factory(ACME_POLICY, ledger_url=url)
    seen: list[Any] = []
    error: list[BaseException] = []
    with streaming.openai(timeout=30) as client:
        stream = client.chat.completions.create(
            model=MINI, messages=MESSAGES, max_tokens=200, stream=True
        )
        reader = threading.Thread(target=_consume, args=(stream, seen, error))
        reader.start()
        fake_provider.wait_until(lambda rs: bool(rs), timeout=5)
        time.sleep(0.2)  # the stream is now silent: the provider stalled
        assert admin.admin("POST", "/admin/v1/kill", json={"scope": "org:acme"}).status_code == 200
        killed_at = time.monotonic()
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert time.monotonic() - killed_at < 2.5  # a stalled stream would never end
    assert error and isinstance(error[0], openai.APIError)
    assert not wait_no_holds(streaming.ledger)


def test_client_disconnect_settles_what_was_delivered(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(output_tokens=300, chunk_delay_ms=10)
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        stream = client.chat.completions.create(
            model=MINI, messages=MESSAGES, max_tokens=300, stream=True
        )
        for i, _ in enumerate(stream):
            if i == 5:
                break
        stream.close()
    assert not wait_no_holds(gw.ledger)
    org = line(gw.ledger, "org:acme", "cost")
    held_worst = cost_units(MINI, 1000, 300)
    assert org is not None and 0 < org.spent < held_worst
    deadline = time.monotonic() + 5
    while gw.gateway.metrics.client_disconnects._value.get() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_responses_stream_is_cut_as_incomplete(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(ignore_max_tokens=300)
    gw = gateway_factory(ACME_POLICY)
    with gw.openai() as client:
        events = list(
            client.responses.create(model=MINI, input="hello", max_output_tokens=20, stream=True)
        )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert not wait_no_holds(gw.ledger)


def test_anthropic_stream_killed_raises_in_the_sdk(
    gateway_factory: GatewayFactory, fake_provider: FakeProvider
) -> None:
    fake_provider.configure(output_tokens=300, chunk_delay_ms=20)
    gw = gateway_factory(ACME_POLICY)
    with gw.anthropic() as client:
        stream = client.messages.create(model=HAIKU, messages=MESSAGES, max_tokens=300, stream=True)
        seen: list[Any] = []
        error: list[BaseException] = []
        reader = threading.Thread(target=_consume, args=(stream, seen, error))
        reader.start()
        while len(seen) < 3:
            time.sleep(0.005)
        gw.admin("POST", "/admin/v1/kill", json={"scope": "org:acme"})
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert error and isinstance(error[0], anthropic.APIStatusError)
    assert "kill switch" in str(error[0])
    assert not wait_no_holds(gw.ledger)
