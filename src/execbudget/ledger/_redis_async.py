"""
The Redis ledger, asyncio face. THIS is the source: ``_redis_sync.py`` is generated from
it by ``scripts/unasync.py`` (keep every difference between the two expressible as a
token substitution, and keep pure logic in ``_redis_common``).

Each operation is one ``FCALL`` of the function library in ``_lua/ledger.lua``; see
``execbudget.ledger.redis`` for keys, the hash-tag rule, clocks and durability.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ..clock import Clock
from ..errors import ConfigurationError
from ._redis_common import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PREFIX,
    DEFAULT_SOCKET_TIMEOUT_S,
    LIBRARY_SOURCE,
    PACK,
    WAITAOF_MIN_VERSION,
    WAITAOF_TIMEOUT_MS,
    Keys,
    event,
    function,
    hold_record,
    line_fields,
    line_state_args,
    now_arg,
    parse_url,
    reserve_call,
    reserve_outcome,
    settle_call,
    settle_outcome,
    unavailable_hint,
    version_tuple,
)
from ._redis_lean import AsyncLean
from ._types import (
    TOMBSTONE_RETENTION_MS,
    Event,
    HoldRecord,
    HoldState,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    SettleMode,
    SettleOutcome,
)

_PURGE_BATCH = 500
#: After the hot-path connection could not be made, how long to use the pool alone.
_SPARE_RETRY_S = 1.0

#: Storages alive in this process, so a forked child drops their hot-path connections.
_LIVE: weakref.WeakSet[AsyncRedisStorage] = weakref.WeakSet()


def _after_fork() -> None:
    for storage in list(_LIVE):
        storage._forget_spare()


os.register_at_fork(after_in_child=_after_fork)


class AsyncRedisStorage:
    """
    A ledger on one Redis primary (standalone or Sentinel-managed), shared by every
    process and host that uses the same URL and prefix.

    ``clock`` is for tests only: when given, its ``now_ms()`` is sent with each call and
    used instead of the server's ``TIME``, so a ManualClock drives expiry. Production
    leaves it None: deadlines then come from one clock, the server's, whatever the
    clients' clocks say.
    """

    scheme: ClassVar[str] = "redis"
    base_exceptions: ClassVar[tuple[type[BaseException], ...]] = (redis.RedisError, OSError)

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        wait_aof: bool = False,
        window_grace_s: int = 0,
    ) -> None:
        # redis-py's annotations union sync and async replies; the ledger parses replies
        # itself (``_redis_common``), so the client is typed loosely here.
        self._r: Any = client
        self._pool: Any = client.connection_pool
        # The hot path's own connection (``_redis_lean``): every FCALL takes it with
        # list.pop() and puts it back with append() (atomic for threads and tasks alike),
        # so an uncontended call skips redis-py's pool, stream and timeout machinery; a
        # concurrent call takes a pooled one instead. It is one connection more than
        # max_connections, closed with the client.
        self._spare: list[AsyncLean] = []
        self._spare_made = False
        self._lean: AsyncLean | None = None  # the one made, in use or not (for close)
        self._spare_retry_at = 0.0
        _LIVE.add(self)
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.clock = clock
        self.wait_aof = wait_aof
        self.window_grace_s = window_grace_s
        self._aof_checked = False
        kwargs = client.connection_pool.connection_kwargs
        self.where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> AsyncRedisStorage:
        """
        ``redis://[[user]:password@]host[:port][/db][?prefix=eb:&wait_aof=0&…]``.

        Our options: ``prefix`` (default ``eb:``; the hash tag), ``wait_aof`` (1: WAITAOF
        1 0 after every write, Redis ≥ 7.2), ``window_grace_s`` (expire a windowed line
        this long after its window ends; 0 keeps lines), ``retries`` (reconnect attempts
        per call, default 3). redis-py's own options (``socket_timeout``, ``db``, …) pass
        through.
        """
        options = parse_url(url)
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), options.retries)
        # A blocking pool: a burst of callers beyond max_connections waits for a free
        # connection (up to the socket timeout) instead of failing as "ledger unavailable".
        pool = BlockingConnectionPool.from_url(
            options.driver_url,
            decode_responses=True,
            retry=retry,
            socket_timeout=DEFAULT_SOCKET_TIMEOUT_S,
            socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT_S,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            timeout=DEFAULT_SOCKET_TIMEOUT_S,
        )
        client = Redis.from_pool(pool)
        return cls(
            client,
            prefix=options.prefix,
            clock=clock,
            wait_aof=options.wait_aof,
            window_grace_s=options.window_grace_s,
        )

    # -- plumbing ----------------------------------------------------------------------
    @contextmanager
    def _hinted(self) -> Iterator[None]:
        """Say what to check when the server cannot be reached (same exception type)."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise type(exc)(f"{unavailable_hint(self.where)} ({exc})") from exc

    def _now(self) -> int | None:
        return None if self.clock is None else self.clock.now_ms()

    async def _fcall(self, op: str, call: Sequence[str]) -> Any:
        """One FCALL of an operation by name (the cold ones)."""
        return await self._run(("FCALL", function(op), *call))

    async def _run(self, command: tuple[str | int, ...]) -> Any:
        """
        One FCALL command; loads the library when the server does not have it (yet).
        A server that cannot be reached is named, with what to check (same exception).
        """
        try:
            try:
                return await self._send(command)
            except redis.ResponseError as exc:
                if "function not found" not in str(exc).lower():
                    raise
            await self._load()
            return await self._send(command)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise type(exc)(f"{unavailable_hint(self.where)} ({exc})") from exc

    async def _send(self, command: tuple[str | int, ...]) -> Any:
        """
        Send one command and read its reply: on the hot-path connection when it is free
        (``_redis_lean``: one socket write, the reply parsed as it arrives), otherwise on
        a pooled redis-py connection, retried and reconnected by the client's retry
        policy as ``execute_command`` would be.
        """
        if self.wait_aof:
            return await self._send_waitaof(command)
        conn: AsyncLean | None
        try:
            conn = self._spare.pop()
        except IndexError:
            conn = await self._new_spare()
        if conn is None:
            return await self._send_pooled(command)
        assert PACK is not None  # a lean connection is only made with hiredis
        try:
            reply = await conn.call(PACK(command))
        except redis.ResponseError:
            self._spare.append(conn)  # an error reply: the connection is in step
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            # Lost: the pool's connections retry it (every ledger operation is idempotent
            # by rid, so a retry of one that landed changes nothing).
            self._drop_spare(conn)
            return await self._send_pooled(command)
        except BaseException:
            if conn.in_step():  # cancelled while waiting: its reply will resolve nothing
                self._spare.append(conn)
            else:
                self._drop_spare(conn)
            raise
        self._spare.append(conn)
        return reply

    async def _new_spare(self) -> AsyncLean | None:
        """
        The hot path's connection, made on first use (again after it failed, at most once
        a second, and in a forked child); None while another caller has it, or when the
        URL is not eligible (TLS, a Unix socket, Sentinel: redis-py throughout).
        """
        if self._spare_made or PACK is None or time.monotonic() < self._spare_retry_at:
            return None
        self._spare_made = True
        try:
            self._lean = await AsyncLean.open(self._pool)
        except (OSError, redis.RedisError):  # the pool's path names the failure
            self._spare_made = False
            self._spare_retry_at = time.monotonic() + _SPARE_RETRY_S
            return None
        except BaseException:  # cancelled or interrupted while connecting: the next caller makes it
            self._spare_made = False
            raise
        return self._lean

    def _drop_spare(self, conn: AsyncLean) -> None:
        conn.close()
        self._lean = None
        self._spare_made = False

    def _forget_spare(self) -> None:
        """In a forked child: the parent's connection is not ours to use."""
        self._spare = []
        self._lean = None
        self._spare_made = False

    async def _send_pooled(self, command: tuple[str | int, ...]) -> Any:
        pool = self._pool
        conn = await pool.get_connection()
        try:
            return await conn.retry.call_with_retry(
                lambda: self._roundtrip(conn, command), lambda _error: conn.disconnect()
            )
        finally:
            await pool.release(conn)

    @staticmethod
    async def _roundtrip(conn: Any, command: tuple[str | int, ...]) -> Any:
        await conn.send_packed_command(
            [PACK(command)] if PACK is not None else conn.pack_command(*command)
        )
        return await conn.read_response()

    async def _send_waitaof(self, command: tuple[str | int, ...]) -> Any:
        if not self._aof_checked:
            await self._check_waitaof()
        # The same connection must run the write and WAITAOF: a pipeline guarantees it.
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
            reply, (local, _replicas) = await pipe.execute()
        if int(local) < 1:
            raise redis.TimeoutError(
                f"WAITAOF: the write was not fsynced to the AOF within {WAITAOF_TIMEOUT_MS} ms"
            )
        return reply

    async def _check_waitaof(self) -> None:
        info = await self._r.info("server")
        if version_tuple(info) < WAITAOF_MIN_VERSION:
            raise ConfigurationError(
                f"wait_aof=1 needs Redis ≥ 7.2 (WAITAOF); {self.where} runs "
                f"{info.get('redis_version')}. Drop wait_aof and run the server with "
                "appendonly yes + appendfsync always for the same guarantee"
            )
        self._aof_checked = True

    async def _load(self) -> None:
        try:
            await self._r.function_load(LIBRARY_SOURCE)
        except redis.ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    # -- operations --------------------------------------------------------------------
    async def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        call = reserve_call(
            self.keys,
            rid,
            lines,
            ttl_ms,
            None if self.clock is None else self.clock.now_ms(),
            on_expiry,
            charge_now,
            self.window_grace_s,
        )
        return reserve_outcome(await self._run(call), lines)

    async def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        now_ms = None if self.clock is None else self.clock.now_ms()
        call = settle_call(self.keys, rid, mode, actual, now_ms)
        return settle_outcome(self.keys, await self._run(call))

    async def extend(self, rid: str, ttl_ms: int) -> bool:
        call = ["2", self.keys.hold(rid), self.keys.expiry, rid, str(ttl_ms)]
        return bool(await self._fcall("extend", [*call, now_arg(self._now())]))

    async def reap(self, limit: int = 200) -> int:
        call = [
            "1",
            self.keys.expiry,
            self.keys.plen,
            now_arg(self._now()),
            str(limit),
            str(TOMBSTONE_RETENTION_MS),
        ]
        return int(await self._fcall("reap", call))

    # -- inspection and administration -------------------------------------------------
    async def lines(self, scope_prefix: str = "") -> list[LineState]:
        with self._hinted():
            names = sorted(
                {k async for k in self._r.scan_iter(self.keys.line_pattern(scope_prefix), 1000)}
            )
            async with self._r.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(name, line_fields())
                rows = await pipe.execute()
        states = [
            LineState(self.keys.parse_line(name), *line_state_args(row))
            for name, row in zip(names, rows, strict=True)
            if any(v is not None for v in row)
        ]
        return sorted(states, key=lambda s: str(s.key))

    async def read_lines(self, keys: Sequence[LineKey]) -> list[LineState | None]:
        """The named lines, in order, in one pipelined round trip (no key scan)."""
        with self._hinted():
            names = [self.keys.line(key) for key in keys]
            async with self._r.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(name, line_fields())
                rows = await pipe.execute()
        return [
            LineState(key, *line_state_args(row)) if any(v is not None for v in row) else None
            for key, row in zip(keys, rows, strict=True)
        ]

    async def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        with self._hinted():
            rids = await self._r.zrange(self.keys.expiry, 0, -1)
            async with self._r.pipeline(transaction=False) as pipe:
                for rid in rids:
                    pipe.hgetall(self.keys.hold(rid))
                rows = await pipe.execute()
        records = [hold_record(self.keys, rid, row) for rid, row in zip(rids, rows, strict=True)]
        return [
            r
            for r in records
            if r is not None
            and r.state is HoldState.HELD
            and any(k.scope.startswith(scope_prefix) for k in r.amounts)
        ]

    async def hold(self, rid: str) -> HoldRecord | None:
        with self._hinted():
            fields = await self._r.hgetall(self.keys.hold(rid))
        return hold_record(self.keys, rid, fields)

    async def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._hinted():
            entries = await self._r.xrange(
                self.keys.events, min=f"{after_seq + 1}-0", max="+", count=limit
            )
        return [event(self.keys, entry_id, fields) for entry_id, fields in entries or []]

    async def set_limit(self, key: LineKey, limit: int | None) -> None:
        value = "" if limit is None else str(limit)
        await self._fcall("admin", ["1", self.keys.line(key), "limit", value])

    async def block(self, key: LineKey, reason: str | None) -> None:
        await self._fcall("admin", ["1", self.keys.line(key), "block", reason or ""])

    async def purge(self, settled_before_ms: int) -> int:
        with self._hinted():
            names = [k async for k in self._r.scan_iter(self.keys.hold_pattern(), 1000)]
        done = 0
        for i in range(0, len(names), _PURGE_BATCH):
            batch = names[i : i + _PURGE_BATCH]
            call = [str(len(batch)), *batch, str(settled_before_ms)]
            done += int(await self._fcall("purge", call))
        return done

    async def now_ms(self) -> int:
        if self.clock is not None:
            return self.clock.now_ms()
        with self._hinted():
            seconds, micros = await self._r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def aclose(self) -> None:
        # The hot-path connection, also when a caller has it (its call then fails); none
        # is made after this.
        lean, self._lean, self._spare = self._lean, None, []
        self._spare_made = True
        if lean is not None:
            lean.close()
        await self._r.aclose()

    async def __aenter__(self) -> AsyncRedisStorage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
