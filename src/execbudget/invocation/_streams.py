"""
Stream guards: the SDK stream, metered chunk by chunk, settled exactly once.

A guard stands in for the SDK's ``Stream`` / ``AsyncStream`` (iteration, ``close``,
``with``, ``response``; any other attribute is the inner stream's). Every chunk goes
through the shared :class:`~._settle.StreamMeter`, which counts its output and says
whether to deliver it, hide it (the usage chunk the wrapper asked for and the caller did
not) or **cut** the stream: the output passed the hold, so the provider ignored
``max_tokens``. A cut closes the HTTP response at once, settles with what was received
(the ledger records the overrun) and raises ``OutputBudgetExceeded``.

A stream can outlive its hold's TTL (the SDK timeout bounds each read, not the whole
stream), so a guard extends the hold whenever half of the TTL has passed, and the reaper
never frees a hold whose stream is still being read.

The hold settles on the first of: the end of the stream, an error, ``close()``,
cancellation, or the guard being dropped unread (``__del__``). The two classes are thin
twins over the shared meter; only ``next``/``await anext`` and the ledger call differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import ExecBudgetError
from ..pricing import Usage
from ._drive import background, ledger_suspends, shielded
from ._settle import StreamMeter, Verdict

if TYPE_CHECKING:
    from ..enforcer import Enforcer, Hold

log = logging.getLogger("execbudget.invocation")
T = TypeVar("T")


class _Guard:
    """What both guards share: the meter, the hold, and what to report."""

    def __init__(
        self, inner: Any, meter: StreamMeter, hold: Hold, enforcer: Enforcer, ttl_s: float
    ) -> None:
        self._inner = inner
        self._meter = meter
        self._hold = hold
        self._enforcer = enforcer
        self._settled = False
        self._ttl_s = ttl_s
        self._extend_at = enforcer.clock.monotonic() + ttl_s / 2 if hold.lines else None

    def _extension_due(self) -> bool:
        due = self._extend_at is not None and self._enforcer.clock.monotonic() >= self._extend_at
        if due:
            self._extend_at = self._enforcer.clock.monotonic() + self._ttl_s / 2
        return due

    # -- what the caller may ask --------------------------------------------------------
    @property
    def response(self) -> Any:
        return self._inner.response

    @property
    def settled(self) -> bool:
        """True once the hold was settled (the stream ended, failed or was closed)."""
        return self._settled

    @property
    def cut(self) -> bool:
        """True if the stream was cut because the provider wrote past the hold."""
        return self._meter.cut

    @property
    def allowance(self) -> int:
        """Output tokens held for this call (the ``max_tokens`` sent, times ``n``)."""
        return self._meter.plan.allowance

    @property
    def usage(self) -> Usage:
        """What the call is (or will be) charged: reported usage, else the local count."""
        return self._meter.usage()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"<{type(self).__name__} {self._meter.plan.model} {state}>"


class BudgetedStream(_Guard, Generic[T]):
    """A metered sync stream (``openai.Stream`` / ``anthropic.Stream`` stand-in)."""

    def __iter__(self) -> BudgetedStream[T]:
        return self

    def __next__(self) -> T:
        while True:
            if self._settled:
                raise StopIteration
            try:
                chunk = next(self._inner)
            except BaseException:
                self._settle()  # the end (StopIteration), an error, an interrupt
                raise
            if self._extension_due():
                self._extend()
            verdict = self._meter.observe(chunk)
            if verdict is Verdict.DELIVER:
                return chunk  # type: ignore[no-any-return]
            if verdict is Verdict.CUT:
                self._close_inner()
                self._settle()
                raise self._meter.cut_error()

    def close(self) -> None:
        """Close the HTTP response and settle what was received."""
        self._close_inner()
        self._settle()

    def _close_inner(self) -> None:
        try:
            self._inner.close()
        except Exception as exc:  # closing is best effort; settling is not
            log.warning("execbudget: closing a stream failed: %s", exc)

    def _extend(self) -> None:
        try:
            self._enforcer.ledger.extend(self._hold.rid, self._ttl_s)
        except ExecBudgetError as exc:
            log.warning("execbudget: could not extend stream hold %s: %s", self._hold.rid, exc)

    def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            self._hold.commit(self._meter.actual())
        except ExecBudgetError as exc:
            log.error("execbudget: could not settle stream hold %s: %s", self._hold.rid, exc)

    def __enter__(self) -> BudgetedStream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_settled", True):
            return
        with contextlib.suppress(Exception):  # never raise from a finalizer
            self.close()  # dropped unread: close the response, charge what arrived


class AsyncBudgetedStream(_Guard, Generic[T]):
    """A metered async stream (``openai.AsyncStream`` / ``anthropic.AsyncStream`` stand-in)."""

    def __aiter__(self) -> AsyncBudgetedStream[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._settled:
                raise StopAsyncIteration
            try:
                chunk = await self._inner.__anext__()
            except BaseException:
                await self._settle()
                raise
            if self._extension_due():
                await self._extend()
            verdict = self._meter.observe(chunk)
            if verdict is Verdict.DELIVER:
                return chunk  # type: ignore[no-any-return]
            if verdict is Verdict.CUT:
                await self._close_inner()
                await self._settle()
                raise self._meter.cut_error()

    async def close(self) -> None:
        """Close the HTTP response and settle what was received."""
        await self._close_inner()
        await self._settle()

    aclose = close

    async def _close_inner(self) -> None:
        try:
            await self._inner.close()
        except Exception as exc:
            log.warning("execbudget: closing a stream failed: %s", exc)

    async def _extend(self) -> None:
        try:
            await self._enforcer.aledger.extend(self._hold.rid, self._ttl_s)
        except ExecBudgetError as exc:
            log.warning("execbudget: could not extend stream hold %s: %s", self._hold.rid, exc)

    async def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            commit = self._hold.acommit(self._meter.actual())
            await (shielded(commit) if ledger_suspends(self._enforcer) else commit)
        except ExecBudgetError as exc:
            log.error("execbudget: could not settle stream hold %s: %s", self._hold.rid, exc)

    async def __aenter__(self) -> AsyncBudgetedStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_settled", True):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            if loop is not None and not loop.is_closed():
                background(self.close())  # dropped unread: settle on the running loop
                return
            # No loop to run on: settle through the sync ledger where the store is
            # in-process (memory, SQLite); otherwise the hold's TTL frees it.
            self._settled = True
            self._hold.commit(self._meter.actual())
        except Exception as exc:  # never raise from a finalizer
            log.warning("execbudget: an abandoned stream's hold is left to its TTL: %s", exc)
