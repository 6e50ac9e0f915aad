"""
Keep-alive HTTP/1.1 connections to the upstreams for whole (non-streamed) exchanges.

httpcore2's ``AsyncHTTPConnection`` speaks the protocol (framing, chunked bodies, TLS,
timeouts); this module is only the pool around it: per origin, a stack of idle
connections, most recently used first. Taking a connection checks that one connection
(its keep-alive expiry, and whether the server closed it), where httpcore2's own pool
walks, and polls the socket of, every idle connection twice per request; together with
httpx2's request and response layers that was about a third of the gateway's CPU per
call (bench/bench_gateway.py).

Streams, proxied upstreams and injected test transports keep using the httpx2 client
(``upstream.UpstreamPool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Final

import httpcore2

__all__ = ["KeepAlivePool", "PoolAnswer"]

#: An idle connection older than this is closed rather than reused.
KEEPALIVE_S: Final = 30.0

_Key = tuple[bytes, bytes, int]


class PoolAnswer:
    """A whole answer: status, headers (as sent) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class KeepAlivePool:
    """At most ``max_connections`` connections in use at once; idle ones are reused LIFO."""

    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext | None) -> None:
        self._idle: dict[_Key, list[httpcore2.AsyncHTTPConnection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl = ssl_context

    async def request(
        self, request: httpcore2.Request, *, pool_timeout_s: float | None
    ) -> PoolAnswer:
        """
        One exchange on an idle or new connection. Raises httpcore2's exceptions
        (``PoolTimeout`` if no connection could be had, ``ConnectError`` if nothing was
        sent, others after); the connection is closed unless it is reusable.
        """
        try:
            async with asyncio.timeout(pool_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore2.PoolTimeout("no upstream connection became free in time") from None
        try:
            origin = request.url.origin
            key = (origin.scheme, origin.host, origin.port)
            connection = await self._take(key)
            if connection is None:
                connection = httpcore2.AsyncHTTPConnection(
                    origin, ssl_context=self._ssl, keepalive_expiry=KEEPALIVE_S
                )
            try:
                response = await connection.handle_async_request(request)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.aclose()
                raise
            if connection.is_idle():
                self._idle.setdefault(key, []).append(connection)
            else:
                await connection.aclose()
            return PoolAnswer(response.status, response.headers, body)
        finally:
            self._slots.release()

    async def _take(self, key: _Key) -> httpcore2.AsyncHTTPConnection | None:
        idle = self._idle.get(key)
        # LIFO reuse leaves the oldest idle connections at the bottom after a burst: close
        # one of them per request once expired (or closed by the server), so they do not
        # sit in CLOSE_WAIT holding descriptors.
        if idle and len(idle) > 1 and idle[0].has_expired():
            with contextlib.suppress(Exception):
                await idle.pop(0).aclose()
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                with contextlib.suppress(Exception):
                    await connection.aclose()
