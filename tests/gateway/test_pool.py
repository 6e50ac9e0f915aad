"""The lean keep-alive pool for whole upstream exchanges, against a scripted HTTP/1.1 server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from execbudget.gateway import GatewayConfig, KeyStore, parse_upstreams
from execbudget.gateway.pool import KeepAlivePool
from execbudget.gateway.upstream import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    UpstreamPool,
)
from execbudget.policy import Policy

OK = b'{"ok":true}'

#: (request number on its connection) -> raw answer, or None to hang.
Script = Callable[[int], bytes | None]


def _answer(body: bytes = OK, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


class Upstream:
    """A loopback HTTP/1.1 server that answers each request as ``script`` says."""

    def __init__(self, script: Script, close_after: bool = False) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                n += 1
                answer = self.script(n)
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:  # a server dropping its idle keep-alive connection
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _pool(port: int, **changes: Any) -> UpstreamPool:
    config = GatewayConfig(
        policy=Policy.from_dict({"scopes": []}),
        upstreams=parse_upstreams([f"openai=http://127.0.0.1:{port}"], env={}),
        ledger_url="memory://",
        keys=KeyStore(),
        **changes,
    )
    return UpstreamPool(config)


@pytest.fixture
async def pools() -> AsyncIterator[list[UpstreamPool]]:
    made: list[UpstreamPool] = []
    yield made
    for pool in made:
        await pool.aclose()


async def test_whole_exchanges_reuse_one_keep_alive_connection(pools: list[UpstreamPool]) -> None:
    async with Upstream(lambda n: _answer()) as upstream:
        pools.append(pool := _pool(upstream.port))
        assert pool._lean is not None
        for _ in range(3):
            answer = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
            assert answer.status_code == 200 and answer.json() == {"ok": True}

        assert upstream.connections == 1
        sent = upstream.requests[0]
        assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{upstream.port}".encode() in sent
        assert sent.endswith(b'\r\n\r\n{"a":1}')


async def test_a_connection_the_server_closed_is_not_reused(pools: list[UpstreamPool]) -> None:
    async with Upstream(lambda n: _answer(), close_after=True) as upstream:
        pools.append(pool := _pool(upstream.port))
        for _ in range(3):
            await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
            await asyncio.sleep(0.05)  # the server's FIN arrives

        assert upstream.connections == 3


async def test_chunked_answers_and_error_statuses(pools: list[UpstreamPool]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b'transfer-encoding: chunked\r\n\r\n5\r\n{"ok"\r\n6\r\n:true}\r\n0\r\n\r\n'
    )
    busy = _answer(b'{"error":{}}', b"429 Too Many Requests", b"retry-after: 2\r\n")
    async with Upstream(lambda n: chunked if n == 1 else busy) as upstream:
        pools.append(pool := _pool(upstream.port))
        answer = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
        assert answer.json() == {"ok": True}

        with pytest.raises(APIStatusError) as refused:
            await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
        assert refused.value.status_code == 429
        assert refused.value.response.headers["retry-after"] == "2"
        assert refused.value.body == b'{"error":{}}'


async def test_failures_say_whether_anything_was_sent(pools: list[UpstreamPool]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    pools.append(pool := _pool(port))
    with pytest.raises(APIConnectionError) as refused:
        await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
    # the invocation layer's classify reads a ConnectError as never sent: nothing billed
    assert type(refused.value.__cause__).__name__ == "ConnectError"

    async with Upstream(lambda n: None) as upstream:
        pools.append(pool := _pool(upstream.port))
        with pytest.raises(APITimeoutError) as late:
            await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1}, timeout_s=0.2)
        # sent, so the provider may have run it: charged in full
        assert type(late.value.__cause__).__name__ == "ReadTimeout"


def test_a_proxy_in_the_environment_routes_everything_through_httpx2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _pool(9)._lean is None


async def test_answers_framed_by_the_connection_close_and_interim_answers(
    pools: list[UpstreamPool],
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    unframed = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + OK
    async with Upstream(lambda n: interim + unframed, close_after=True) as upstream:
        pools.append(pool := _pool(upstream.port))
        for _ in range(2):  # the first connection ended with its answer: a new one
            answer = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
            assert answer.status_code == 200 and answer.json() == {"ok": True}
        assert upstream.connections == 2


async def test_a_garbled_answer_is_a_protocol_error_and_the_connection_is_dropped(
    pools: list[UpstreamPool],
) -> None:
    answers = iter([b"HTTP/1.1 abc\r\n\r\n", _answer()])
    async with Upstream(lambda n: next(answers)) as upstream:
        pools.append(pool := _pool(upstream.port))
        with pytest.raises(APIConnectionError) as garbled:
            await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
        # sent and answered: an unknown outcome, charged in full
        assert type(garbled.value.__cause__).__name__ == "RemoteProtocolError"
        answer = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
        assert answer.json() == {"ok": True} and upstream.connections == 2


async def test_closing_the_pool_closes_connections_in_use(pools: list[UpstreamPool]) -> None:
    async with Upstream(lambda n: None) as upstream:  # never answers
        pool = _pool(upstream.port)
        call = asyncio.ensure_future(
            pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
        )
        for _ in range(100):
            if upstream.requests:
                break
            await asyncio.sleep(0.01)
        assert pool._lean is not None and pool._lean.connections == 1
        await pool.aclose()
        with pytest.raises(APIConnectionError):
            await asyncio.wait_for(call, 5)
        assert pool._lean.connections == 0


async def test_a_connection_that_answered_twice_is_not_reused(pools: list[UpstreamPool]) -> None:
    async with Upstream(lambda n: _answer() + _answer()) as upstream:
        pools.append(pool := _pool(upstream.port))
        for _ in range(2):
            answer = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
            assert answer.json() == {"ok": True}
        assert upstream.connections == 2


async def test_a_stray_answer_begun_in_the_same_read_is_never_served_to_the_next_request(
    pools: list[UpstreamPool],
) -> None:
    # The read that carries answer 1 also carries the head and part of a second answer
    # nobody asked for: the connection is mid-message and must not go back to the pool.
    stray = b'HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{"stale"'
    for partial in (stray, b"HTTP/1.1 2"):
        nxt = _answer(b'{"next":true}')
        ups: list[Upstream] = []

        def script(
            n: int, partial: bytes = partial, nxt: bytes = nxt, ups: list[Upstream] = ups
        ) -> bytes:
            if ups[0].connections > 1:  # a new connection: a clean answer
                return nxt
            return _answer() + partial if n == 1 else b":true}" + nxt  # the stray one's rest

        async with Upstream(script) as upstream:
            ups.append(upstream)
            pools.append(pool := _pool(upstream.port))
            first = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1})
            assert first.json() == {"ok": True}
            second = await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 2})
            assert second.json() == {"next": True}
            assert upstream.connections == 2


async def _timed(pool: Any, port: int, timeout_s: float) -> tuple[float, BaseException | int]:
    """One request of ``KeepAlivePool``: seconds it took, and its status or failure."""
    started = time.monotonic()
    try:
        answer = await pool.request(
            (b"http", b"127.0.0.1", port),
            b"POST",
            b"/x",
            [(b"host", b"x"), (b"content-length", b"2")],
            b"{}",
            timeout_s=timeout_s,
        )
        return time.monotonic() - started, answer.status
    except Exception as exc:
        return time.monotonic() - started, exc


async def test_one_deadline_bounds_the_wait_for_a_connection_and_the_exchange() -> None:
    # One connection, an upstream that takes 0.3 s: the second request waits 0.3 s for the
    # slot and has 0.2 s of its 0.5 s left for its exchange, so it fails at 0.5 s, never
    # later (the hold's TTL is the timeout plus a margin, not twice the timeout).
    handlers: list[asyncio.Task[Any]] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                await asyncio.sleep(0.3)
                writer.write(_answer())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = KeepAlivePool(1, None)
    try:
        (t1, r1), (t2, r2) = await asyncio.gather(_timed(pool, port, 0.5), _timed(pool, port, 0.5))
        # a request whose whole deadline goes on the wait for the slot: nothing was sent
        busy = asyncio.ensure_future(_timed(pool, port, 5))
        await asyncio.sleep(0.05)
        t3, r3 = await _timed(pool, port, 0.1)
        await busy
    finally:
        await pool.aclose()
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
    assert r1 == 200 and t1 < 0.5
    assert type(r2).__name__ == "ReadTimeout" and t2 < 0.6
    assert type(r3).__name__ == "PoolTimeout" and t3 < 0.2


class _Trickle(httpx2.AsyncBaseTransport):
    """An upstream behind an injected transport that answers a byte every 50 ms, for 2 s."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(40):
                await asyncio.sleep(0.05)
                yield b" "

        return httpx2.Response(200, stream=_Stream(body()))


class _Stream(httpx2.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            yield chunk


async def test_one_deadline_bounds_a_whole_exchange_through_httpx2_too() -> None:
    # each read arrives well within the timeout; the whole answer does not
    config = GatewayConfig(
        policy=Policy.from_dict({"scopes": []}),
        upstreams=parse_upstreams(["openai=http://127.0.0.1:9"], env={}),
        ledger_url="memory://",
        keys=KeyStore(),
    )
    pool = UpstreamPool(config, transport=_Trickle())
    assert pool._lean is None
    began = time.perf_counter()
    try:
        with pytest.raises(APITimeoutError):
            await pool.send("openai", "POST", "/v1/chat/completions", [], {"a": 1}, timeout_s=0.3)
    finally:
        await pool.aclose()
    assert time.perf_counter() - began < 1.5
