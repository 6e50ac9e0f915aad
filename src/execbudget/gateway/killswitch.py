"""
The kill switch: a hard cut-off for a scope, on the next request and for streams in flight.

**Next request.** Killing a scope blocks its gateway line (``chain.gateway_line``), which
every hold of every gateway process includes; the ledger refuses a blocked line inside the
same atomic reserve that checks the budgets, so there is no window in which a process
that has not heard of the kill still admits. Every other existing line of the scope is
blocked too, so in-process users of the same ledger (``execbudget.run``) stop as well.

**In flight.** Each gateway process runs one ``KillWatch``. Streams register their chain;
while any is registered, the watch reads the scopes' gateway lines every ``interval_s``
(``Ledger.read_lines``: one exact read of named lines on every backend, where listing a
scope's lines would be a key scan on Redis), and a kill made through this process's admin
API is seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable

from ..ledger import AsyncLedger, LineKey
from .chain import GATEWAY_WINDOW, gateway_line

__all__ = ["KillWatch", "Ticket", "kill_scope", "killed_among", "revive_scope"]

log = logging.getLogger("execbudget.gateway")

KILLED = "killed"


async def kill_scope(ledger: AsyncLedger, scope: str) -> list[LineKey]:
    """Block the scope's gateway line and every other line of it; returns the lines blocked."""
    blocked = [gateway_line(scope).key]
    await ledger.block(blocked[0], KILLED)
    for line in await ledger.lines(scope):
        if line.key.scope == scope and line.key != blocked[0] and line.blocked is None:
            await ledger.block(line.key, KILLED)
            blocked.append(line.key)
    return blocked


async def revive_scope(ledger: AsyncLedger, scope: str) -> list[LineKey]:
    """Lift a kill: unblock the lines blocked by it (an overrun block stays)."""
    revived = []
    for line in await ledger.lines(scope):
        if line.key.scope == scope and line.blocked == KILLED:
            await ledger.block(line.key, None)
            revived.append(line.key)
    return revived


async def killed_among(ledger: AsyncLedger, scopes: Iterable[str]) -> set[str]:
    """The scopes whose gateway line is blocked: one exact read of their gateway lines."""
    pending = list(dict.fromkeys(scopes))
    states = await ledger.read_lines([LineKey(s, GATEWAY_WINDOW, "calls") for s in pending])
    return {
        scope
        for scope, state in zip(pending, states, strict=True)
        if state is not None and state.blocked is not None
    }


class Ticket:
    """One in-flight stream's registration: its scopes and what to do when one is killed."""

    __slots__ = ("_on_kill", "id", "killed", "scopes")

    def __init__(self, ticket_id: int, scopes: frozenset[str], on_kill: Callable[[str], None]):
        self.id = ticket_id
        self.scopes = scopes
        self.killed: str | None = None
        self._on_kill = on_kill

    def kill(self, scope: str) -> None:
        if self.killed is None:
            self.killed = scope
            self._on_kill(scope)


class KillWatch:
    """Per process: watches the scopes of in-flight streams for kills (see module doc)."""

    def __init__(self, ledger: AsyncLedger, interval_s: float = 0.25) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.probes = 0

    def register(self, scopes: Iterable[str], on_kill: Callable[[str], None]) -> Ticket:
        ticket = Ticket(next(self._ids), frozenset(scopes), on_kill)
        self._tickets[ticket.id] = ticket
        self._wake.set()
        return ticket

    def unregister(self, ticket: Ticket) -> None:
        self._tickets.pop(ticket.id, None)

    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    def killed_here(self, scope: str) -> None:
        """A kill made through this process: cut its streams now, without waiting a poll."""
        for ticket in list(self._tickets.values()):
            if scope in ticket.scopes:
                ticket.kill(scope)

    async def poll(self) -> None:
        tickets = list(self._tickets.values())
        if not tickets:
            return
        scopes = set().union(*(t.scopes for t in tickets))
        self.probes += 1
        killed = await killed_among(self.ledger, sorted(scopes))
        for scope in killed:
            for ticket in tickets:
                if scope in ticket.scopes:
                    ticket.kill(scope)

    async def _run(self) -> None:
        while True:
            if not self._tickets:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception as exc:  # a ledger outage must not kill the watch itself
                log.warning("kill switch probe failed: %s", exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kill-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
