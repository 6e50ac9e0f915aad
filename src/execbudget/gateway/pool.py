"""
Keep-alive HTTP/1.1 connections to the upstreams for whole (non-streamed) exchanges.

A whole exchange is one write of the request and one answer read to its end, so this
module speaks HTTP/1.1 itself: an ``asyncio.Protocol`` per connection, the answer parsed by
httptools (llhttp, the C parser uvicorn uses: framing, chunked bodies, keep-alive rules),
and a pool of idle connections per origin, most recently used first. A connection the
server closes is marked closed the moment its FIN arrives, so taking one is a flag check.

This replaced httpcore2's ``AsyncHTTPConnection`` on this path: its anyio stream, h11
state machine and per-read timeouts cost about 0.4 ms of the gateway's added latency per
call on loopback (bench/bench_gateway.py, the null-proxy floor rows), which is most of what
a proxy hop costs at all.

Failures are raised as httpcore2's exception classes, because the invocation layer's
``classify`` reads their names: ``ConnectError`` / ``ConnectTimeout`` / ``PoolTimeout``
mean nothing was sent (released); ``ReadTimeout``, ``RemoteProtocolError`` and ``ReadError``
mean the request may have run (charged in full). The timeout is one deadline for the whole
request, taken when it starts: the wait for a free connection, the connect and the
exchange share it (each gets what the others left), and it bounds the whole exchange, not
the gap between two reads, so neither a saturated pool nor a slow-trickling answer can
make a call outlive its hold's TTL (the timeout plus a margin).

Streams, proxied upstreams and injected test transports keep using the httpx2 client
(``upstream.UpstreamPool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Final, cast

import httpcore2
import httptools

__all__ = ["KeepAlivePool", "PoolAnswer"]

#: An idle connection older than this is closed rather than reused.
KEEPALIVE_S: Final = 30.0
#: Seconds to open a connection (TCP and TLS) before ``ConnectTimeout``.
CONNECT_TIMEOUT_S: Final = 10.0

#: (scheme, host, port)
Origin = tuple[bytes, bytes, int]


class PoolAnswer:
    """A whole answer: status, headers (as sent) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.expires = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[PoolAnswer] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._framed = False  # a content-length or transfer-encoding: not close-delimited

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpcore2.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(httpcore2.RemoteProtocolError("the upstream switched protocols"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._headers_done and not self._framed and self._status:
            self._finish(False)  # the body ran to the end of the connection
        elif self._headers_done:
            self._fail(httpcore2.ReadError("the upstream closed the connection mid-answer"))
        else:
            self._fail(httpcore2.RemoteProtocolError("the upstream closed without answering"))

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        # An answer that starts while no request waits (in the same read as the previous
        # one's end): the connection is mid-message, so it must never serve another request.
        if self._waiter is None:
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:  # a second answer to one request: drop the connection
            self.close()
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        self._finish(self._parser.should_keep_alive())

    # -- the exchange ------------------------------------------------------------------
    def _finish(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        answer = PoolAnswer(self._status, self._headers, b"".join(self._body))
        self._reset()
        if not keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _timed_out(self) -> None:
        self._fail(httpcore2.ReadTimeout("the upstream did not answer in time"))
        self.close()

    async def exchange(self, data: bytes, deadline: float | None) -> PoolAnswer:
        """Send ``data`` and read its answer, by ``deadline`` (the loop's clock)."""
        assert self.transport is not None
        if self.closed:  # the server hung up between the connect and now: nothing was sent
            raise httpcore2.ConnectError("the upstream closed the connection before the request")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[PoolAnswer] = loop.create_future()
        self._waiter = waiter
        self.transport.write(data)
        timer = loop.call_at(deadline, self._timed_out) if deadline is not None else None
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._waiter is None and time.monotonic() < self.expires

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _check_field(value: bytes) -> bytes:
    if b"\r" in value or b"\n" in value or b"\0" in value:
        raise httpcore2.LocalProtocolError("a header contains a line break")
    return value


class KeepAlivePool:
    """At most ``max_connections`` connections in use at once; idle ones are reused LIFO."""

    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext | None) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl = ssl_context

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        timeout_s: float | None,
    ) -> PoolAnswer:
        """
        One exchange on an idle or new connection, all of it (the wait for a free
        connection, the connect, the exchange) within ``timeout_s`` of now. Raises
        httpcore2's exceptions (``PoolTimeout`` if no connection could be had,
        ``ConnectError`` / ``ConnectTimeout`` if nothing was sent, others after); the
        connection is closed unless it is reusable.
        """
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise httpcore2.PoolTimeout("no upstream connection became free in time") from None
        else:
            await slots.acquire()
        try:
            parts = [method, b" ", target, b" HTTP/1.1\r\n"]
            for name, value in headers:
                parts += (_check_field(name), b": ", _check_field(value), b"\r\n")
            parts += (b"\r\n", body)
            data = b"".join(parts)
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                raise httpcore2.PoolTimeout("no upstream connection became free in time")
            connection = self._take(origin)
            if connection is None:
                connection = await self._connect(origin, deadline)
            try:
                answer = await connection.exchange(data, deadline)
            except BaseException:
                self._discard(connection)
                raise
            if connection.closed:
                self._open.discard(connection)
            else:
                connection.expires = time.monotonic() + KEEPALIVE_S
                self._idle.setdefault(origin, []).append(connection)
            return answer
        finally:
            slots.release()

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        # LIFO reuse leaves the oldest idle connections at the bottom after a burst: close
        # one of them per request once expired, so they do not sit holding descriptors.
        if len(idle) > 1 and not idle[0].reusable:
            self._discard(idle.pop(0))
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection
            self._discard(connection)
        return None

    async def _connect(self, origin: Origin, deadline: float | None) -> _Connection:
        """A new connection, by ``CONNECT_TIMEOUT_S`` or the request's deadline if sooner."""
        scheme, host, port = origin
        name = host.decode("ascii")
        tls = self._ssl if scheme == b"https" else None
        if scheme == b"https" and tls is None:
            tls = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        by = loop.time() + CONNECT_TIMEOUT_S
        if deadline is not None:
            by = min(by, deadline)
        try:
            async with asyncio.timeout_at(by):
                _, connection = await loop.create_connection(
                    _Connection,
                    name.strip("[]"),
                    port,
                    ssl=tls,
                    server_hostname=name.strip("[]") if tls is not None else None,
                )
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {name}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore2.ConnectError(f"cannot connect to {name}:{port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            connection.close()

    @property
    def connections(self) -> int:
        """Open connections, idle or in use."""
        return len(self._open)

    async def aclose(self) -> None:
        """Close every connection, those in use too (their exchanges fail)."""
        self._idle = {}
        open_, self._open = self._open, set()
        for connection in open_:
            with contextlib.suppress(Exception):
                connection.close()
        await asyncio.sleep(0)  # let the transports run connection_lost
