"""
``redis://`` and ``rediss://``: the distributed ledger, one server-side function per
operation.

``RedisStorage`` (redis-py, sync) and ``AsyncRedisStorage`` (redis.asyncio) share one Lua
function library (``_lua/ledger.lua``, loaded with ``FUNCTION LOAD`` on first use and
again whenever a server answers "function not found"). Each write is one ``FCALL`` that
validates its arguments, checks every line and only then writes every line, because Redis
does not roll back a script that fails halfway. hiredis parses replies when installed.

**Why Functions, not EVALSHA scripts.** Functions are stored in the RDB/AOF and
replicated, so a restart with persistence or a failover to a replica keeps them; cached
scripts vanish on both, and the first call after pays a NOSCRIPT round trip. The library
name carries a hash of its source, so two execbudget versions sharing a server never
replace each other's code.

**Keys and the hash-tag rule (Redis Cluster).** Every key of one ledger is under the hash
tag ``{<prefix>}`` (URL option ``prefix``, default ``eb:``)::

    {eb:}l:<scope>/<window>/<dim>   HASH  lim ov sp hd or bl     budget line
    {eb:}h:<rid>                    HASH  st cr ex oe se a:* c:*  hold, then tombstone
    {eb:}ex                         ZSET  rid → deadline ms       expiry index (reap)
    {eb:}ev                         STREAM id <seq>-0             event log
    {eb:}seq                        STRING                        last event seq

So a ledger is one cluster slot, and every chain in it is in that slot. The tag is the
prefix rather than each chain's root scope because the contract needs cross-chain state:
``settle(rid)`` names no scope, ``events()`` promises one global, gap-free ``seq``, an
operator may limit or block a line before any chain has used it, and a line reached from
two roots would silently become two budgets under two tags. **Rule: one prefix = one
slot; to spread tenants over a cluster, give each root tenant (org) its own prefix**
(its own ledger URL), and put a cap that spans tenants behind slices
(``execbudget.ledger.slices``). Scans (``lines``, ``purge``) stay inside the prefix.

**Clocks.** Deadlines come from the server's ``TIME``, one clock for every client.
``clock=`` (a ``Clock``) replaces it, for tests only: its ``now_ms()`` is sent with each
call so a ManualClock drives expiry.

**Durability** (what an acknowledged write can lose when the server crashes): no
persistence → everything since start; ``appendfsync everysec`` → about the last second;
``appendfsync always`` → nothing; ``?wait_aof=1`` (Redis ≥ 7.2) → nothing, on any
``appendfsync``, at one more round trip per write. A failover to an asynchronous replica
can lose what the replica had not received. See docs/ledger-redis.md.
"""

from __future__ import annotations

from ._redis_async import AsyncRedisStorage
from ._redis_sync import RedisStorage

__all__ = ["AsyncRedisStorage", "RedisStorage"]
