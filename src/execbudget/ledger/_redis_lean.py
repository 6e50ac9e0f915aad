"""
The Redis ledger's hot-path connection: a command is one socket write, and its reply is
parsed by hiredis as it arrives.

On an event loop, redis-py's connection costs about 95 µs per FCALL on top of the call
itself (a reserve 2 ms apart from the next: 262 µs through redis-py, 168 µs through this;
a PING through this: 51 µs; ``docs/ledger-redis.md``). That is a ``drain``, a timeout
context per read, the StreamReader's wake-ups and a retry wrapper. Reserve and settle are
on every request's path, so they take this connection when it is free. Everything else,
and a command whose connection failed, goes through redis-py, which keeps its pool,
retries, TLS and Sentinel. Only a plain TCP URL whose options this connection honours is
eligible (``lean_settings``). Any other URL keeps redis-py throughout.

``AsyncLean`` matches replies to waiting futures in order, so a caller that is cancelled
while it waits leaves the connection in step: its reply resolves nothing. ``SyncLean`` is
one blocking socket, used by one thread at a time (the storage takes it off a list). A
call interrupted between its write and its reply leaves it out of step, so it is closed.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, cast

import hiredis
import redis
import redis.asyncio
from redis._parsers.base import BaseParser

from ._redis_common import PACK

__all__ = ["AsyncLean", "SyncLean", "lean_settings"]

#: Connection options this connection honours; a pool with any other keeps redis-py.
_HONOURED: Final = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "decode_responses",
        "retry",
        "protocol",
        "health_check_interval",
        # redis-py's own bookkeeping, set on every pool
        "himport_registry",
        "maint_notifications_pool_handler",
        "maint_notifications_config",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
    }
)
_READ_SIZE: Final = 65536


@dataclass(frozen=True, slots=True)
class LeanSettings:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    timeout_s: float
    connect_timeout_s: float
    keepalive: bool

    def handshake(self) -> list[bytes]:
        """The commands a new connection sends first: AUTH, SELECT."""
        assert PACK is not None
        out: list[bytes] = []
        if self.password is not None:
            user = () if self.username is None else (self.username,)
            out.append(PACK(("AUTH", *user, self.password)))
        if self.db:
            out.append(PACK(("SELECT", self.db)))
        return out


def lean_settings(pool: Any, plain: type) -> LeanSettings | None:
    """
    The settings of a lean connection like ``pool``'s, or None when its connections are
    not plain TCP (``plain``: redis-py's ``Connection`` class of that face), when hiredis
    is missing, or when an option is set that this connection does not honour.
    """
    if PACK is None or pool.connection_class is not plain:
        return None
    kwargs = pool.connection_kwargs
    if not kwargs.get("decode_responses") or not _HONOURED.issuperset(kwargs):
        return None
    timeout = kwargs.get("socket_timeout") or 5.0
    return LeanSettings(
        host=str(kwargs.get("host") or "localhost"),
        port=int(kwargs.get("port") or 6379),
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        timeout_s=float(timeout),
        connect_timeout_s=float(kwargs.get("socket_connect_timeout") or timeout),
        keepalive=bool(kwargs.get("socket_keepalive")),
    )


def _error(reply: hiredis.ReplyError) -> redis.RedisError:
    """An error reply as redis-py raises it (``LOADING`` → BusyLoadingError, …)."""
    error: redis.RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


class AsyncLean(asyncio.Protocol):
    """One connection on one event loop; replies resolve their callers' futures in order."""

    def __init__(self, settings: LeanSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._reader = hiredis.Reader(encoding="utf-8")
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: redis.RedisError | None = None

    @classmethod
    async def open(cls, pool: Any) -> AsyncLean | None:
        """A connection to ``pool``'s server, or None if its URL is not eligible."""
        settings = lean_settings(pool, redis.asyncio.Connection)
        if settings is None:
            return None
        loop = asyncio.get_running_loop()
        conn = cls(settings, loop)
        async with asyncio.timeout(settings.connect_timeout_s):
            transport, _ = await loop.create_connection(lambda: conn, settings.host, settings.port)
        conn._transport = transport
        try:
            if settings.keepalive:
                sock = conn._transport.get_extra_info("socket") if conn._transport else None
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for command in settings.handshake():
                await conn.call(command)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not subclass asyncio.Transport; they have its methods)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                if future.done():  # its caller was cancelled: the reply is skipped
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.close(redis.ConnectionError(f"Redis sent a reply out of protocol ({exc!r})"))

    def connection_lost(self, exc: Exception | None) -> None:
        cause = f" ({exc})" if exc is not None else ""
        self._fail(redis.ConnectionError(f"the connection to Redis closed{cause}"))

    # -- use ------------------------------------------------------------------------------
    def in_step(self) -> bool:
        """Usable by the next caller: open, and on this caller's event loop."""
        return self._lost is None and self._loop is asyncio.get_running_loop()

    async def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (an error reply is raised)."""
        if self._lost is not None:
            raise self._lost
        assert self._transport is not None
        future = self._loop.create_future()
        self._waiting.append(future)
        self._transport.write(packed)
        timer = self._loop.call_later(self._settings.timeout_s, self._timed_out, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _timed_out(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            seconds = self._settings.timeout_s
            self.close(redis.TimeoutError(f"Redis did not answer within {seconds:g} s"))

    def _fail(self, error: redis.RedisError) -> None:
        if self._lost is None:
            self._lost = error
        waiting = self._waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_exception(self._lost)

    def close(self, error: redis.RedisError | None = None) -> None:
        """Fail every caller still waiting (with ``error``) and drop the connection."""
        self._fail(error or redis.ConnectionError("the lean Redis connection was closed"))
        if self._transport is not None:
            self._transport.abort()


class SyncLean:
    """One blocking socket; one thread at a time (see the module docstring)."""

    def __init__(self, settings: LeanSettings, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._reader = hiredis.Reader(encoding="utf-8")
        self._settings = settings

    @classmethod
    def open(cls, pool: Any) -> SyncLean | None:
        """A connection to ``pool``'s server, or None if its URL is not eligible."""
        settings = lean_settings(pool, redis.Connection)
        if settings is None:
            return None
        try:
            sock = socket.create_connection(
                (settings.host, settings.port), timeout=settings.connect_timeout_s
            )
        except TimeoutError as exc:
            raise redis.TimeoutError(f"connecting to Redis timed out ({exc})") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis ({exc})") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if settings.keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(settings.timeout_s)
        conn = cls(settings, sock)
        try:
            for command in settings.handshake():
                conn.call(command)
        except BaseException:
            conn.close()
            raise
        return conn

    def in_step(self) -> bool:
        return self._sock is not None

    def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (an error reply is raised)."""
        sock = self._sock
        if sock is None:
            raise redis.ConnectionError("the lean Redis connection was closed")
        self._sock = None  # out of step until the reply is read
        reader = self._reader
        try:
            sock.sendall(packed)
            while (reply := reader.gets()) is False:
                data = sock.recv(_READ_SIZE)
                if not data:
                    raise redis.ConnectionError("the connection to Redis closed")
                reader.feed(data)
        except TimeoutError as exc:
            sock.close()
            seconds = self._settings.timeout_s
            raise redis.TimeoutError(f"Redis did not answer within {seconds:g} s") from exc
        except (OSError, hiredis.ProtocolError) as exc:
            sock.close()
            raise redis.ConnectionError(f"the connection to Redis failed ({exc!r})") from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        if isinstance(reply, hiredis.ReplyError):
            raise _error(reply)
        return reply

    def close(self, error: redis.RedisError | None = None) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
