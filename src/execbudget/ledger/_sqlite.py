"""
``sqlite:///path``: the embedded default ledger, shared by every process on one host.

Every operation is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front,
so ``busy_timeout`` is honoured and the check-then-write of a reserve is atomic across
processes (a deferred transaction that later writes can fail with SQLITE_BUSY at once).
WAL mode lets readers run beside the single writer. ``synchronous`` is a URL option:
``NORMAL`` (default) survives an application crash and may lose the last transactions on
an OS crash or power loss; ``FULL`` loses nothing that was acknowledged.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError
from ._memory import charges_for
from ._sqlite_batch import GroupCommitter, Undo, run_alone
from ._types import (
    Denial,
    Event,
    HoldRecord,
    HoldState,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    ReserveStatus,
    SettleMode,
    SettleOutcome,
    SettleStatus,
)

_R = TypeVar("_R")
SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS eb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eb_line (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL, win TEXT NOT NULL, dim TEXT NOT NULL,
    lim INTEGER NOT NULL, override INTEGER,
    spent INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    overrun INTEGER NOT NULL DEFAULT 0,
    blocked TEXT,
    window_end_ms INTEGER,
    UNIQUE (scope, win, dim)
);
CREATE TABLE IF NOT EXISTS eb_hold (
    rid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    lines TEXT NOT NULL,
    charged TEXT,
    created_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    on_expiry TEXT NOT NULL,
    settled_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS eb_hold_due ON eb_hold (expires_at_ms) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS eb_hold_settled ON eb_hold (settled_ms) WHERE state <> 'held';
CREATE TABLE IF NOT EXISTS eb_event (
    seq INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, rid TEXT NOT NULL, lines TEXT NOT NULL
);
"""
_SYNC_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
# A commit appends every page it changed to the WAL, checksummed; a pair changes ~5-11
# small pages, so 1 KiB pages cut the commit from ~28 to ~16 µs (BENCHMARKS.md). It only
# takes effect when the file is created.
_PAGE_SIZE: Final = 1024
# SQLite checkpoints every 1,000 WAL pages by default, inside whichever commit crosses the
# mark, with an fsync: that commit takes milliseconds, and it was the whole p99. A larger
# WAL checkpoints less often and writes each hot page once per checkpoint.
DEFAULT_AUTOCHECKPOINT_PAGES: Final = 4000
# The stored strings, looked up once: ``.value`` of an enum member is a Python-level
# property call on every use.
_SETTLED_STATE: Final = {
    SettleMode.COMMIT: HoldState.COMMITTED.value,
    SettleMode.RELEASE: HoldState.RELEASED.value,
    SettleMode.EXPIRE: HoldState.EXPIRED.value,
    SettleMode.EXPIRE_CHARGE: HoldState.EXPIRED_CHARGE.value,
}
_EVENT_KIND: Final = {mode: mode.value for mode in SettleMode}
_ON_EXPIRY: Final = {rule: rule.value for rule in OnExpiry}


def _pairs_json(ids: Sequence[int], amounts: Sequence[int]) -> str:
    """``[[id,amount],...]``: ``json.dumps`` without its spaces, at a third of the cost."""
    return "[" + ",".join([f"[{i},{a}]" for i, a in zip(ids, amounts, strict=True)]) + "]"


@functools.cache
def _select_sql(n: int) -> str:
    """The read of a reserve's books over ``n`` lines (the refusal path only)."""
    marks = ",".join("?" * n)
    return f"SELECT id, override, spent, held, blocked FROM eb_line WHERE id IN ({marks})"


# One line of a reserve as a point update by rowid, run with ``executemany`` over the chain:
# ``?1`` the amount, ``?2`` the limit, ``?3`` the line id. The row changes only if it grants,
# so a chain that changed as many rows as it has lines was granted in full. (An ``IN`` list
# or a join over the chain makes SQLite build an ephemeral table per statement, which cost
# more than the statement itself: 20-30k instructions each.)
_GRANT_SQL: Final = {
    column: f"UPDATE eb_line SET {column} = {column} + ?1, lim = ?2 WHERE id = ?3"
    " AND blocked IS NULL AND spent + held + ?1 <= coalesce(override, ?2)"
    for column in ("held", "spent")
}
_SETTLE_LINE_SQL: Final = "UPDATE eb_line SET held = held - ?, spent = spent + ? WHERE id = ?"
_SETTLE_HOLD_SQL: Final = (
    "UPDATE eb_hold SET state = ?, charged = ?, settled_ms = ? WHERE rid = ? AND state = 'held'"
)
# A plain hold names only what it sets: ``charged`` and ``settled_ms`` stay NULL.
_HOLD_SQL: Final = (
    "INSERT INTO eb_hold (rid, state, lines, created_ms, expires_at_ms, on_expiry)"
    " VALUES (?,'held',?,?,?,?) ON CONFLICT (rid) DO NOTHING"
)
_CHARGED_SQL: Final = (
    "INSERT INTO eb_hold (rid, state, lines, charged, created_ms, expires_at_ms, on_expiry,"
    " settled_ms) VALUES (?,'committed',?,?,?,?,?,?) ON CONFLICT (rid) DO NOTHING"
)
_EVENT_SQL: Final = "INSERT INTO eb_event (ts_ms, kind, rid, lines) VALUES (?, ?, ?, ?)"
#: Chains remembered (see ``_Chain``); a new window is a new chain, so the map is bounded.
_MAX_CHAINS: Final = 1024


class _Chain:
    """
    A chain of lines this storage has reserved on: its line ids, and its pairs JSON as a
    ``%``-template of the amounts. A wrapped call reserves and settles on the same few
    chains over and over; with the chain known, neither builds the id list or the JSON
    piece by piece (the line ids of a key never change: lines are never deleted).
    """

    __slots__ = ("dims", "ids", "keys", "pairs")

    def __init__(self, keys: tuple[LineKey, ...], ids: tuple[int, ...]) -> None:
        self.keys = keys
        self.ids = ids
        self.dims = tuple(key[2] for key in keys)
        self.pairs = "[" + ",".join(f"[{i},%d]" for i in ids) + "]"


#: (chain, amounts, lines JSON) of a hold this storage made.
_Mine = tuple[_Chain, tuple[int, ...], str]
#: Holds this storage made and has not settled yet (see ``SQLiteStorage._held``).
_MAX_HELD: Final = 4096


class _Refused(Exception):
    """A line refused the fast reserve: undo it and rerun the reserve with a read."""


class SQLiteStorage:
    """A ledger in one SQLite file: WAL, ``BEGIN IMMEDIATE``, a busy timeout."""

    scheme: ClassVar[str] = "sqlite"
    base_exceptions: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error, OSError)

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 30_000,
        wal_autocheckpoint: int = DEFAULT_AUTOCHECKPOINT_PAGES,
        group_commit: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNC_MODES:
            raise ConfigurationError(
                f"sqlite synchronous={synchronous!r} is not one of {', '.join(_SYNC_MODES)}"
            )
        if busy_timeout_ms < 0:
            raise ConfigurationError("sqlite busy_timeout_ms must not be negative")
        if wal_autocheckpoint < 0:
            raise ConfigurationError(
                "sqlite wal_autocheckpoint must not be negative (pages; 0 turns it off)"
            )
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout_ms = busy_timeout_ms
        self.wal_autocheckpoint = wal_autocheckpoint
        self.clock = clock
        self._local = threading.local()
        self._ids: dict[LineKey, int] = {}
        self._keys: dict[int, LineKey] = {}
        self._chains: dict[tuple[LineKey, ...], _Chain] = {}
        self._connections: list[sqlite3.Connection] = []
        # rid → what this storage held for it (chain, amounts, lines JSON), until it
        # settles: the settle then skips reading the hold back. Only a cache: the settle
        # checks the hold's row still says exactly that, and reads it otherwise.
        self._held: dict[str, _Mine] = {}
        self._conns_lock = threading.Lock()
        if group_commit and str(path) == ":memory:":
            raise ConfigurationError(
                "sqlite group_commit needs a file: the writer thread's connection to "
                ":memory: would be a separate, private database"
            )
        self.group_commit = group_commit
        self._committer: GroupCommitter | None = None
        if group_commit:
            # The writer reaches the storage through a weak reference, so a storage dropped
            # without close() is still collected; the finalizer then stops the writer.
            self._committer = GroupCommitter(weakref.WeakMethod(self._conn), self.path.name)
            weakref.finalize(self, self._committer.close)
        self._conn()  # open now, so a bad path or a corrupt file fails at construction

    # -- connection ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path),
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            self._wal(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.wal_autocheckpoint)}").fetchone()
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        local = self._local
        # One cursor per connection for the operations: ``conn.execute`` makes (and
        # frees) a cursor object per statement, eight times per reserve and settle.
        local.cur = conn.cursor()
        local.nowait = local.inline = False
        local.conn = conn
        with self._conns_lock:
            self._connections.append(conn)
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """
        Put the file in WAL mode. Connections opening a new file at once convert it
        together, and SQLite can refuse that pragma ``database is locked`` without calling
        the busy handler (8 threads opening one fresh file: 4 trials in 60 failed), so it is
        retried here, within the same busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.002)

    def _use(self) -> sqlite3.Connection:
        """This thread's connection, waiting for other writers unless in ``fail_fast``."""
        return self._cursor().connection

    def _cursor(self) -> sqlite3.Cursor:
        """``_use``, as this thread's cursor (what the operations run on)."""
        local = self._local
        cur: sqlite3.Cursor | None = getattr(local, "cur", None)
        if cur is None:
            self._conn()
            cur = local.cur
        if local.nowait and not local.inline:
            cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            local.nowait = False
        return cur

    @contextmanager
    def fail_fast(self) -> Iterator[None]:
        """
        Within the block, this thread gives up at once (SQLITE_BUSY) instead of waiting for
        another writer. An event loop uses it to run a ~50 µs transaction inline and hand
        it to a worker thread only when the file is busy, rather than paying a thread
        hand-off on every operation. The connection stays in that mode after the block
        (two statements fewer per operation of an event loop); the next use outside such
        a block (``_use``) makes it wait again.
        """
        conn = self._conn()
        local = self._local
        if not getattr(local, "nowait", False):
            conn.execute("PRAGMA busy_timeout = 0")
            local.nowait = True
        local.inline = True  # with group commit, too: waiting is what this avoids
        try:
            yield
        finally:
            local.inline = False

    @staticmethod
    def is_busy(exc: BaseException) -> bool:
        """A lock conflict that a retry with waiting would resolve (nothing was written)."""
        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM eb_meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO eb_meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"ledger file {self.path} has schema version {row[0]}, newer than this "
                    f"execbudget understands ({SCHEMA_VERSION}); upgrade execbudget"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _tx(self, fn: Callable[..., _R], *args: Any) -> _R:
        """
        Run ``fn(conn, *args)`` in a ``BEGIN IMMEDIATE`` transaction: its own, or with
        group commit a share of the writer thread's next one. ``fn`` raises ``Undo`` to
        roll its writes back and still answer.
        """
        if self._committer is not None and not getattr(self._local, "inline", False):
            return self._committer.run(fn, *args)
        return run_alone(self._cursor(), fn, *args)

    def _line_ids(
        self, conn: sqlite3.Cursor, lines: Sequence[LineRequest]
    ) -> tuple[list[int], dict[LineKey, int]]:
        """Line ids for a chain, creating missing lines; new ids are cached only on commit."""
        ids: list[int] = []
        fresh: dict[LineKey, int] = {}
        for req in lines:
            line_id = self._ids.get(req.key)
            if line_id is None:
                k = req.key
                conn.execute(
                    "INSERT INTO eb_line (scope, win, dim, lim, window_end_ms) VALUES (?,?,?,?,?)"
                    " ON CONFLICT (scope, win, dim) DO NOTHING",
                    (k.scope, k.window, k.dimension, req.limit, req.window_end_ms),
                )
                (line_id,) = conn.execute(
                    "SELECT id FROM eb_line WHERE scope = ? AND win = ? AND dim = ?",
                    (k.scope, k.window, k.dimension),
                ).fetchone()
                fresh[req.key] = line_id
            ids.append(line_id)
        return ids, fresh

    def _remember(self, fresh: Mapping[LineKey, int]) -> None:
        for key, line_id in fresh.items():
            self._ids[key] = line_id
            self._keys[line_id] = key

    def _key(self, conn: sqlite3.Connection | sqlite3.Cursor, line_id: int) -> LineKey:
        key = self._keys.get(line_id)
        if key is None:
            scope, win, dim = conn.execute(
                "SELECT scope, win, dim FROM eb_line WHERE id = ?", (line_id,)
            ).fetchone()
            key = self._keys[line_id] = LineKey(scope, win, dim)
            self._ids[key] = line_id
        return key

    # -- operations ------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        lines: Sequence[LineRequest],
        ttl_ms: int,
        *,
        on_expiry: OnExpiry = OnExpiry.RELEASE,
        charge_now: bool = False,
    ) -> ReserveOutcome:
        now = self.clock.now_ms()
        # One C-level transpose: the keys find the chain, the limits and amounts are bound.
        keys: tuple[LineKey, ...] = ()
        limits: tuple[int, ...] = ()
        amounts: tuple[int, ...] = ()
        if lines:
            keys, limits, amounts, _ = zip(*lines, strict=True)
        chain = self._chains.get(keys)
        args = (rid, lines, limits, amounts, ttl_ms, on_expiry, charge_now, chain)
        outcome, fresh, pairs = self._tx(self._reserve, now, *args, True)
        if outcome is None:  # a line refused: undone; read the books in a transaction anew
            outcome, fresh, pairs = self._tx(self._reserve, self.clock.now_ms(), *args, False)
        assert outcome is not None  # the reserve with a read always answers
        if outcome.status is ReserveStatus.OK:
            if chain is None:
                self._remember(fresh)
                chain = self._chain(keys)
            if not charge_now:
                held = self._held
                if len(held) >= _MAX_HELD:  # holds settled elsewhere, or never: forget them
                    held.clear()
                held[rid] = (chain, amounts, pairs)
        return outcome

    def _chain(self, keys: tuple[LineKey, ...]) -> _Chain:
        """Remember a chain whose lines all have known ids (after a granted reserve)."""
        ids = self._ids
        chain = _Chain(keys, tuple([ids[key] for key in keys]))
        chains = self._chains
        if len(chains) >= _MAX_CHAINS:
            chains.clear()
        chains[keys] = chain
        return chain

    def _reserve(
        self,
        cur: sqlite3.Cursor,
        now: int,
        rid: str,
        lines: Sequence[LineRequest],
        limits: tuple[int, ...],
        amounts: tuple[int, ...],
        ttl_ms: int,
        on_expiry: OnExpiry,
        charge_now: bool,
        chain: _Chain | None,
        fast: bool,
    ) -> tuple[ReserveOutcome | None, dict[LineKey, int], str]:
        """
        ``fast``: every line is a conditional point update and a refusal only says that
        some line refused (returns no outcome, undone); otherwise the books are read first
        and a refusal names the line, as the denial must.
        """
        fresh: dict[LineKey, int]
        if chain is not None:
            ids: Sequence[int] = chain.ids
            fresh = {}
            pairs = chain.pairs % amounts
        else:
            ids, fresh = self._line_ids(cur, lines)
            pairs = _pairs_json(ids, amounts)
        expires = now + ttl_ms
        # Claim the rid first: a retried reserve finds it taken and changes nothing.
        if charge_now:
            claim = cur.execute(
                _CHARGED_SQL, (rid, pairs, pairs, now, expires, _ON_EXPIRY[on_expiry], now)
            )
        else:
            claim = cur.execute(_HOLD_SQL, (rid, pairs, now, expires, _ON_EXPIRY[on_expiry]))
        if not claim.rowcount:
            state, old_expiry = cur.execute(
                "SELECT state, expires_at_ms FROM eb_hold WHERE rid = ?", (rid,)
            ).fetchone()
            status = ReserveStatus.DUP if state == HoldState.HELD else ReserveStatus.SETTLED
            raise Undo((ReserveOutcome(status, old_expiry), {}, pairs))
        if not fast:
            # Check every line; write nothing unless all of them grant.
            books = {r[0]: r[1:] for r in cur.execute(_select_sql(len(ids)), ids).fetchall()}
            for i, (req, line_id) in enumerate(zip(lines, ids, strict=True)):
                override, spent, held, blocked = books[line_id]
                limit = req.limit if override is None else override
                if blocked is not None or spent + held + req.amount > limit:
                    denial = Denial(i, req.key, limit, spent, held, req.amount, blocked or "limit")
                    raise Undo((ReserveOutcome(ReserveStatus.DENIED, None, denial), {}, pairs))
        grant_sql = _GRANT_SQL["spent" if charge_now else "held"]
        if cur.executemany(grant_sql, zip(amounts, limits, ids, strict=True)).rowcount != len(ids):
            if fast:
                raise Undo((None, {}, pairs))
            raise sqlite3.InternalError("a reserve checked as granted was refused")
        cur.execute(_EVENT_SQL, (now, "reserve", rid, pairs))
        if charge_now:
            cur.execute(_EVENT_SQL, (now, "commit", rid, pairs))
        return ReserveOutcome(ReserveStatus.OK, expires), fresh, pairs

    def settle(
        self, rid: str, mode: SettleMode, actual: Mapping[str, int] | None = None
    ) -> SettleOutcome:
        mine = self._held.pop(rid, None)
        return self._tx(self._settle, self.clock.now_ms(), rid, mode, actual, mine)

    def _settle(
        self,
        cur: sqlite3.Cursor,
        now: int,
        rid: str,
        mode: SettleMode,
        actual: Mapping[str, int] | None,
        mine: _Mine | None,
    ) -> SettleOutcome:
        state = _SETTLED_STATE[mode]
        if mine is not None:
            # A hold this storage made: its lines are known, and the hold's row is settled
            # only if it is still held with exactly those lines (another process may have
            # settled or reaped it; then the read below answers). ``charges_for``, per line.
            chain, amounts, pairs = mine
            charged: tuple[int, ...]
            if mode is SettleMode.COMMIT:
                if actual:
                    get = actual.get
                    charged = tuple(
                        [get(dim, a) for dim, a in zip(chain.dims, amounts, strict=True)]
                    )
                else:
                    charged = amounts
            elif mode is SettleMode.EXPIRE_CHARGE:
                charged = amounts
            else:
                charged = (0,) * len(amounts)
            charged_pairs = chain.pairs % charged
            if cur.execute(
                _SETTLE_HOLD_SQL + " AND lines = ?", (state, charged_pairs, now, rid, pairs)
            ).rowcount:
                charges = list(zip(chain.ids, amounts, charged, strict=True))
                by_key = dict(zip(chain.keys, charged, strict=True))
                return self._settle_lines(cur, now, rid, mode, charges, by_key, charged_pairs)
        row = cur.execute(
            "SELECT state, lines, charged FROM eb_hold WHERE rid = ?", (rid,)
        ).fetchone()
        if row is None:
            return SettleOutcome(SettleStatus.UNKNOWN)
        held_state, lines_json, charged_json = row
        if held_state != HoldState.HELD:
            return SettleOutcome(SettleStatus.SETTLED, self._decode(cur, charged_json))
        held_pairs: list[list[int]] = json.loads(lines_json)
        held = {self._key(cur, i): a for i, a in held_pairs}
        by_line = charges_for(mode, held, actual)
        keys_of = self._keys
        line_charges = [(i, a, by_line[keys_of[i]]) for i, a in held_pairs]
        charged_pairs = _pairs_json(
            [i for i, _, _ in line_charges], [c for _, _, c in line_charges]
        )
        cur.execute(_SETTLE_HOLD_SQL, (state, charged_pairs, now, rid))
        return self._settle_lines(cur, now, rid, mode, line_charges, by_line, charged_pairs)

    @staticmethod
    def _settle_lines(
        cur: sqlite3.Cursor,
        now: int,
        rid: str,
        mode: SettleMode,
        charges: list[tuple[int, int, int]],
        charged: dict[LineKey, int],
        charged_pairs: str,
    ) -> SettleOutcome:
        """Move each line's hold to spent (flagging overruns) and log the settlement."""
        if any(c > a for _, a, c in charges):
            cur.executemany(
                "UPDATE eb_line SET held = held - ?, spent = spent + ?, overrun = overrun + ?,"
                " blocked = CASE WHEN ? > 0 THEN coalesce(blocked, 'overrun') ELSE blocked END"
                " WHERE id = ?",
                [(a, c, max(0, c - a), max(0, c - a), i) for i, a, c in charges],
            )
            status = SettleStatus.OVERRUN
        else:
            cur.executemany(_SETTLE_LINE_SQL, [(a, c, i) for i, a, c in charges])
            status = SettleStatus.OK
        cur.execute(_EVENT_SQL, (now, _EVENT_KIND[mode], rid, charged_pairs))
        return SettleOutcome(status, charged)

    def _decode(
        self, conn: sqlite3.Connection | sqlite3.Cursor, pairs_json: str | None
    ) -> dict[LineKey, int]:
        if not pairs_json:
            return {}
        return {self._key(conn, i): a for i, a in json.loads(pairs_json)}

    def extend(self, rid: str, ttl_ms: int) -> bool:
        return (
            self._write(
                "UPDATE eb_hold SET expires_at_ms = ? WHERE rid = ? AND state = 'held'",
                (self.clock.now_ms() + ttl_ms, rid),
            )
            == 1
        )

    def reap(self, limit: int = 200) -> int:
        due = (
            self._use()
            .execute(
                "SELECT rid, on_expiry FROM eb_hold WHERE state = 'held' AND expires_at_ms <= ?"
                " ORDER BY expires_at_ms LIMIT ?",
                (self.clock.now_ms(), limit),
            )
            .fetchall()
        )
        done = 0
        for rid, on_expiry in due:
            mode = SettleMode.EXPIRE_CHARGE if on_expiry == OnExpiry.CHARGE else SettleMode.EXPIRE
            if self.settle(rid, mode).status in (SettleStatus.OK, SettleStatus.OVERRUN):
                done += 1
        return done

    # -- inspection and administration ----------------------------------------------
    def lines(self, scope_prefix: str = "") -> list[LineState]:
        rows = (
            self._use()
            .execute(
                "SELECT scope, win, dim, coalesce(override, lim), spent, held, overrun, blocked"
                " FROM eb_line WHERE substr(scope, 1, ?) = ? ORDER BY scope, win, dim",
                (len(scope_prefix), scope_prefix),
            )
            .fetchall()
        )
        return [LineState(LineKey(s, w, d), *rest) for s, w, d, *rest in rows]

    def read_lines(self, keys: Sequence[LineKey]) -> list[LineState | None]:
        """The named lines, in order; None for a line no reserve has created yet."""
        if not keys:
            return []
        marks = ",".join("(?,?,?)" for _ in keys)
        rows = (
            self._use()
            .execute(
                "SELECT scope, win, dim, coalesce(override, lim), spent, held, overrun, blocked"
                f" FROM eb_line WHERE (scope, win, dim) IN (VALUES {marks})",
                [part for key in keys for part in key],
            )
            .fetchall()
        )
        found = {LineKey(sc, w, d): LineState(LineKey(sc, w, d), *rest) for sc, w, d, *rest in rows}
        return [found.get(key) for key in keys]

    def holds(self, scope_prefix: str = "") -> list[HoldRecord]:
        conn = self._use()
        rows = conn.execute(
            "SELECT rid, state, lines, charged, created_ms, expires_at_ms, on_expiry, settled_ms"
            " FROM eb_hold WHERE state = 'held' ORDER BY expires_at_ms"
        ).fetchall()
        records = [self._record(conn, row) for row in rows]
        return [r for r in records if any(k.scope.startswith(scope_prefix) for k in r.amounts)]

    def hold(self, rid: str) -> HoldRecord | None:
        conn = self._use()
        row = conn.execute(
            "SELECT rid, state, lines, charged, created_ms, expires_at_ms, on_expiry, settled_ms"
            " FROM eb_hold WHERE rid = ?",
            (rid,),
        ).fetchone()
        return None if row is None else self._record(conn, row)

    def _record(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> HoldRecord:
        rid, state, lines_json, charged_json, created, expires, on_expiry, settled = row
        return HoldRecord(
            str(rid),
            HoldState(state),
            self._decode(conn, str(lines_json)),
            self._decode(conn, charged_json if isinstance(charged_json, str) else None),
            int(created),
            int(expires),
            OnExpiry(on_expiry),
            None if settled is None else int(settled),
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        conn = self._use()
        rows = conn.execute(
            "SELECT seq, ts_ms, kind, rid, lines FROM eb_event WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [Event(s, t, k, r, self._decode(conn, lines)) for s, t, k, r, lines in rows]

    def set_limit(self, key: LineKey, limit: int | None) -> None:
        self._write(
            "INSERT INTO eb_line (scope, win, dim, lim, override) VALUES (?,?,?,?,?)"
            " ON CONFLICT (scope, win, dim) DO UPDATE SET override = excluded.override",
            (key.scope, key.window, key.dimension, limit or 0, limit),
        )

    def block(self, key: LineKey, reason: str | None) -> None:
        self._write(
            "INSERT INTO eb_line (scope, win, dim, lim, blocked) VALUES (?,?,?,0,?)"
            " ON CONFLICT (scope, win, dim) DO UPDATE SET blocked = excluded.blocked",
            (key.scope, key.window, key.dimension, reason),
        )

    def purge(self, settled_before_ms: int) -> int:
        return self._write(
            "DELETE FROM eb_hold WHERE state <> 'held' AND settled_ms < ?", (settled_before_ms,)
        )

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own write transaction; returns the rows it changed."""

        def run(conn: sqlite3.Cursor) -> int:
            return int(conn.execute(sql, params).rowcount)

        return self._tx(run)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        with self._conns_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
