"""
Group commit for the SQLite ledger: the operations that threads of one process submit
while a transaction is being written share the next transaction, and its one fsync.

With ``synchronous=FULL`` every commit waits for an fsync of the WAL while holding the
file's write lock, so one transaction per operation caps a host at the disk's fsync rate
(two per reserve+commit pair). A process with many threads (a gateway, a thread pool of
agents) can do better: one writer thread takes whatever has queued up, runs each
operation under its own ``SAVEPOINT`` (a refused or failing operation undoes only its own
writes), commits once, and only then answers every caller. Nothing is acknowledged before
it is durable, exactly as without batching.

A lone caller pays a thread hand-off (tens of microseconds) for nothing, so this is an
option (``group_commit=1``), not the default.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_R = TypeVar("_R")


class Undo(Exception, Generic[_R]):
    """Raised by an operation to undo its own writes and still answer ``value``."""

    def __init__(self, value: _R) -> None:
        super().__init__("undo")
        self.value = value


class _Op:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


def run_alone(cur: sqlite3.Cursor, fn: Callable[..., _R], *args: Any) -> _R:
    """Run ``fn(cur, *args)`` in its own ``BEGIN IMMEDIATE`` transaction."""
    cur.execute("BEGIN IMMEDIATE")
    try:
        result = fn(cur, *args)
    except Undo as undo:
        cur.execute("ROLLBACK")
        value: _R = undo.value
        return value
    except BaseException:
        if cur.connection.in_transaction:
            cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")
    return result


_AFTER_FORK: weakref.WeakSet[GroupCommitter] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for committer in list(_AFTER_FORK):
        committer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class GroupCommitter:
    """One writer thread and its connection; ``run`` blocks until the batch is committed."""

    def __init__(
        self, connect: Callable[[], Callable[[], sqlite3.Connection] | None], name: str
    ) -> None:
        """``connect()`` gives the function that opens the writer's connection, or None
        once the storage is gone (a ``weakref.WeakMethod``)."""
        self._connect = connect
        self._name = name
        self._cond = threading.Condition()
        self._pending: list[_Op] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        # A fork can happen while another thread holds the condition's lock: the child
        # gets a fresh one, and starts its own writer on first use.
        _AFTER_FORK.add(self)

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition()
        self._pending = []
        self._thread = None

    def run(self, fn: Callable[..., _R], *args: Any) -> _R:
        op = _Op(fn, args)
        with self._cond:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            if self._thread is None:
                self._start()
            self._pending.append(op)
            self._cond.notify()
        op.done.wait()
        if op.error is not None:
            raise op.error
        result: _R = op.result
        return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"execbudget-sqlite-writer:{self._name}", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            # In a method of its own, so nothing of the batch (whose operations are bound
            # to the storage) stays referenced from this frame while the writer waits.
            conn = self._serve(conn, batch)
            del batch

    def _serve(
        self, conn: sqlite3.Connection | None, batch: list[_Op]
    ) -> sqlite3.Connection | None:
        try:
            if conn is None:
                opener = self._connect()
                if opener is None:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                conn = opener()
            self._commit(conn.cursor(), batch)
        except BaseException as exc:  # the connection itself failed: every op hears it
            for op in batch:
                op.error, op.result = exc, None
        for op in batch:
            op.done.set()
        return conn

    @staticmethod
    def _commit(conn: sqlite3.Cursor, batch: list[_Op]) -> None:
        """Run ``batch`` on the writer's cursor ``conn``: one transaction, one commit."""
        if len(batch) == 1:  # nothing to share: the plain transaction, no savepoint
            op = batch[0]
            try:
                op.result = run_alone(conn, op.fn, *op.args)
            except BaseException as exc:
                op.error = exc
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                conn.execute("SAVEPOINT eb_op")
                try:
                    op.result = op.fn(conn, *op.args)
                except Undo as undo:
                    conn.execute("ROLLBACK TO eb_op")
                    op.result = undo.value
                except Exception as exc:
                    conn.execute("ROLLBACK TO eb_op")
                    op.error = exc
                conn.execute("RELEASE eb_op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.connection.in_transaction:
                conn.execute("ROLLBACK")
            raise
