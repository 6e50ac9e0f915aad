"""
Clocks: where "now" comes from.

Everything that reads time takes a ``Clock`` so tests never sleep: ``ManualClock`` is moved
by hand to expire holds, roll windows over and run deadlines out. Wall time (milliseconds
since the epoch) drives windows and hold expiry; monotonic time drives deadlines, so a
wall-clock step never stretches or shortens a run's time budget.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """The two kinds of time execbudget reads."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds since the Unix epoch (windows, hold expiry)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (deadlines)."""
        ...


class SystemClock:
    """The real clocks of this host."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """
    A clock that moves only when told to, shared by every thread that holds it.

    ``advance(seconds)`` moves wall and monotonic time together, as real time would.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._lock = threading.Lock()
        self._now_ms = int(start.timestamp() * 1000)
        self._mono = 1000.0

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now_ms += round(seconds * 1000)
            self._mono += seconds

    def set(self, when: datetime) -> None:
        """Jump wall time forward to ``when`` (monotonic time moves by the same amount)."""
        target = int(when.timestamp() * 1000)
        with self._lock:
            if target < self._now_ms:
                raise ValueError("a ManualClock only moves forward")
            self._mono += (target - self._now_ms) / 1000
            self._now_ms = target


SYSTEM_CLOCK = SystemClock()
