"""
Bad input, on both sides: malformed and oversized requests, wrong types, unknown models,
upstream errors, garbled upstream bodies and streams, an unreachable ledger, and fuzzed
requests. Always a 4xx (or the upstream's own status, or 502/503/504) with a body that
says what to change; never a 500, never a crash, never a hold left behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from execbudget.testing import FakeProvider

from ._harness import ACME_KEY, GatewayServer, config, line, wait_no_holds
from .conftest import AsgiFactory

CHAT = "/v1/chat/completions"
MINI = "gpt-4o-mini"
MSGS = [{"role": "user", "content": "hi"}]
BODY = {"model": MINI, "messages": MSGS, "max_tokens": 8}
POLICY = {"scopes": [{"match": "org:*", "limits": {"cost": "5 USD"}}]}


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "empty_body"),
        (b"[1, 2]", "invalid_body"),
        (b'"a string"', "invalid_body"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b'{"model": "gpt-4o-mini", "temperature": NaN}', "invalid_json"),
    ],
)
async def test_unreadable_bodies(asgi_factory: AsgiFactory, content: bytes, code: str) -> None:
    gw = asgi_factory(POLICY)
    response = await gw.call(CHAT, key=ACME_KEY, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"] == code and "JSON" in error["message"]) or "body" in error["message"]
    assert await gw.gateway.ledger.holds() == []


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": 5}, "model"),
        ({"model": ""}, "model"),
        ({"model": None}, "model"),
        ({"model": "a#b"}, "model"),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 10**30}, "max_tokens"),
        ({"max_completion_tokens": -5}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hi"]}, "messages"),
    ],
)
async def test_wrong_types_get_a_400_naming_the_field(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider, change: dict[str, Any], param: str
) -> None:
    gw = asgi_factory(POLICY)
    response = await gw.call(CHAT, {**BODY, **change}, key=ACME_KEY)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert fake_provider.requests == []
    assert await gw.gateway.ledger.holds() == []


async def test_malformed_message_content_is_a_400(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    weird = {**BODY, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    response = await gw.call(CHAT, weird, key=ACME_KEY)
    assert response.status_code in (200, 400), response.text
    anthropic = await gw.call(
        "/v1/messages", {"model": "claude-3-5-haiku-latest", "messages": MSGS}, key=ACME_KEY
    )
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["code"] == "invalid_max_tokens"
    assert await gw.gateway.ledger.holds() == []


async def test_background_responses_cannot_bypass_the_hold(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    body = {"model": MINI, "input": "hi", "max_output_tokens": 64, "background": True}
    response = await gw.call("/v1/responses", body, key=ACME_KEY)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "background_not_supported"
    assert fake_provider.requests == []


async def test_huge_body_is_413_before_it_is_read(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY, max_body_bytes=64 * 1024)
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 200_000}]}
    response = await gw.call(CHAT, big, key=ACME_KEY)
    assert response.status_code == 413
    assert "65,536 bytes" in response.json()["error"]["message"]

    async def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"x" * 4096

    streamed = await gw.call(CHAT, key=ACME_KEY, content=chunks())
    assert streamed.status_code == 413


async def test_unknown_model_is_denied_with_how_to_fix_it(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    response = await gw.call(CHAT, {**BODY, "model": "gpt-nonexistent-9"}, key=ACME_KEY)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_not_priced" and "pricing.models" in error["message"]
    assert fake_provider.requests == []


async def test_upstream_errors_pass_through_and_release_the_hold(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    for status in (429, 500, 400):
        fake_provider.configure(error_status=status, fail_next=1)
        response = await gw.call(CHAT, BODY, key=ACME_KEY)
        assert response.status_code == status  # the provider's own answer, as it gave it
    assert await gw.gateway.ledger.holds() == []
    org = line(gw.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent == 0  # an error is not billed


async def test_upstream_unreachable_and_garbled(asgi_factory: AsgiFactory) -> None:
    down = asgi_factory(POLICY, upstream_url="http://127.0.0.1:9")
    response = await down.call(CHAT, BODY, key=ACME_KEY)
    assert (
        response.status_code == 502 and response.json()["error"]["type"] == "upstream_unreachable"
    )
    org = line(down.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent == 0  # never sent: released

    def garbage(request: httpx2.Request) -> httpx2.Response:
        if b'"stream":true' in request.content:
            return httpx2.Response(
                200,
                content=b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: {oops\n\n',
                headers={"content-type": "text/event-stream"},
            )
        return httpx2.Response(200, content=b"<html>not json</html>")

    gw = asgi_factory(POLICY, transport=httpx2.MockTransport(garbage))
    response = await gw.call(CHAT, BODY, key=ACME_KEY)
    assert response.status_code == 502 and "charged in full" in response.json()["error"]["message"]
    stream = await gw.call(CHAT, {**BODY, "stream": True}, key=ACME_KEY)
    assert stream.status_code == 200
    assert b'"code":"garbled"' in stream.content  # a terminal error event, then the end
    assert await gw.gateway.ledger.holds() == []
    org = line(gw.gateway.sync_ledger, "org:acme", "cost")
    assert org is not None and org.spent > 0 and org.held == 0  # billed, unreadable: in full


async def test_ledger_unreachable_fails_closed_with_a_503_that_says_so(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY, ledger_url="redis://127.0.0.1:1/0?retries=0")
    response = await gw.call(CHAT, BODY, key=ACME_KEY)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "ledger_unavailable" and "fail closed" in error["message"]
    assert fake_provider.requests == []
    open_policy = {**POLICY, "failure_mode": "open"}
    degraded = asgi_factory(open_policy, ledger_url="redis://127.0.0.1:1/0?retries=0")
    response = await degraded.call(CHAT, BODY, key=ACME_KEY)
    assert response.status_code == 200
    assert response.headers["x-execbudget-degraded"] == "ledger-unavailable"


async def test_no_route_and_wrong_method(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    missing = await gw.client.post("/v1/nothing", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await gw.client.get(CHAT)
    assert wrong.status_code == 405


# -- fuzzing ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_gateway() -> Iterator[tuple[GatewayServer, FakeProvider]]:
    with FakeProvider() as fake:
        server = GatewayServer(config(fake, POLICY, kill_poll_s=0.05)).start()
        try:
            yield server, fake
        finally:
            server.stop()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_models = (
    st.sampled_from(
        [MINI, "claude-3-5-haiku-latest", "text-embedding-3-small", "unknown-model", ""]
    )
    | _json
)
_limits = st.integers(min_value=-5, max_value=5000) | _json
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]) | _json},
    optional={"content": st.text(max_size=50) | _json, "name": _json},
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "model": _models,
        "messages": st.lists(_message, max_size=3) | _json,
        "input": st.text(max_size=50) | _json,
        "max_tokens": _limits,
        "max_completion_tokens": _limits,
        "max_output_tokens": _limits,
        "stream": st.booleans() | _json,
        "n": _limits,
        "tools": _json,
        "system": _json,
        "stream_options": _json,
    },
)
_routes = st.sampled_from([CHAT, "/v1/responses", "/v1/embeddings", "/v1/messages"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=_routes, body=_body, raw=st.none() | st.binary(max_size=64))
def test_fuzzed_requests_never_crash_or_leak_holds(
    fuzz_gateway: tuple[GatewayServer, FakeProvider],
    route: str,
    body: dict[str, Any],
    raw: bytes | None,
) -> None:
    server, _ = fuzz_gateway
    content = raw if raw is not None else json.dumps(body).encode()
    response = httpx.post(
        f"{server.base_url}{route}",
        content=content,
        headers={"authorization": f"Bearer {ACME_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, (route, body, response.text)
    if response.status_code >= 400:
        payload = response.json()
        error = payload["error"]
        assert isinstance(error["message"], str) and error["message"]
    assert not wait_no_holds(server.ledger, timeout=5)


_blocks = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image", "tool_result", "x"])},
        optional={"text": st.text(max_size=20) | _json, "source": _json},
    ),
    max_size=3,
)


@st.composite
def _near_valid(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Valid requests with one or more fields fuzzed: these reach counting and upstream."""
    route = draw(_routes)
    text = st.text(max_size=40)
    if route == CHAT:
        body: dict[str, Any] = {
            "model": MINI,
            "messages": [{"role": "user", "content": draw(text | _json | _blocks)}],
        }
    elif route == "/v1/messages":
        body = {
            "model": "claude-3-5-haiku-latest",
            "max_tokens": draw(st.integers(1, 300)),
            "messages": [{"role": "user", "content": draw(text | _blocks)}],
        }
    elif route == "/v1/responses":
        body = {"model": MINI, "input": draw(text | st.lists(_message, max_size=2) | _json)}
    else:
        inputs = st.lists(st.text(max_size=10), min_size=1, max_size=3) | st.lists(
            st.integers(0, 1000), min_size=1, max_size=5
        )
        body = {"model": "text-embedding-3-small", "input": draw(text.filter(bool) | inputs)}
    fields = st.sampled_from(
        [
            "max_tokens",
            "max_output_tokens",
            "stream",
            "n",
            "tools",
            "temperature",
            "stream_options",
            "system",
            "tool_choice",
            "instructions",
        ]
    )
    body.update(
        draw(st.dictionaries(fields, st.integers(1, 200) | st.booleans() | _json, max_size=3))
    )
    return route, body


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_near_valid())
def test_fuzzed_near_valid_requests_reach_upstream_safely(
    fuzz_gateway: tuple[GatewayServer, FakeProvider], case: tuple[str, dict[str, Any]]
) -> None:
    server, _ = fuzz_gateway
    route, body = case
    response = httpx.post(
        f"{server.base_url}{route}",
        content=json.dumps(body).encode(),  # Python writes Infinity: the gateway refuses it
        headers={"authorization": f"Bearer {ACME_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, (route, body, response.text)
    assert not wait_no_holds(server.ledger, timeout=5)


async def test_a_billed_answer_whose_body_will_not_decode_is_charged_in_full(
    asgi_factory: AsgiFactory,
) -> None:
    """A 200 that claims gzip but is not: the provider answered (and billed), so the hold
    is charged in full, never released; the client gets a 502 that says so."""
    import asyncio

    async def lying_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request head; the body is not needed
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-encoding: gzip\r\ncontent-length: 8\r\n\r\nnot gzip"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(lying_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = asgi_factory(POLICY, upstream_url=f"http://127.0.0.1:{port}")
        response = await gw.call(CHAT, BODY, key=ACME_KEY)
        assert response.status_code == 502, response.text
        assert "charged in full" in response.json()["error"]["message"]
        assert await gw.gateway.ledger.holds() == []
        org = line(gw.gateway.sync_ledger, "org:acme", "cost")
        assert org is not None and org.spent > 0 and org.held == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_a_model_id_with_any_characters_is_forwarded_encoded_not_a_500(
    asgi_factory: AsgiFactory,
) -> None:
    gw = asgi_factory(POLICY)
    for model_id in ("gpt-ñ-unknown", "a b", "x%2Fy"):
        response = await gw.client.get(
            f"/v1/models/{model_id}", headers={"authorization": f"Bearer {ACME_KEY}"}
        )
        assert response.status_code < 500, (model_id, response.status_code, response.text)
