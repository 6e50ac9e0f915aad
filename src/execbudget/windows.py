"""
Calendar windows: which ledger line a spend lands on, and when that line resets.

A windowed limit (``cost: {day: "50 USD"}``) is a separate ledger line per window, keyed by
an explicit window id (``d2026-12-04``), never by a TTL. A hold belongs to the window in
force when it was made and settles against that line even if it settles after midnight.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError


class Window(StrEnum):
    TOTAL = "total"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@lru_cache(maxsize=64)
def timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown timezone {name!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _start(window: Window, local: datetime) -> datetime:
    if window is Window.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if window is Window.DAY:
        return day
    if window is Window.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next(window: Window, start: datetime) -> datetime:
    tz = start.tzinfo
    naive = start.replace(tzinfo=None)
    if window is Window.HOUR:
        # Hours are counted in UTC offsets so DST transitions neither skip nor repeat a line.
        return (start.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
    if window is Window.DAY:
        nxt = naive + timedelta(days=1)
    elif window is Window.WEEK:
        nxt = naive + timedelta(days=7)
    elif naive.month == 12:
        nxt = naive.replace(year=naive.year + 1, month=1)
    else:
        nxt = naive.replace(month=naive.month + 1)
    return nxt.replace(tzinfo=tz)


def window_id(window: Window, now_ms: int, tz: str = "UTC") -> str:
    """The id of the window containing ``now_ms`` (``total`` for lifetime limits)."""
    if window is Window.TOTAL:
        return "total"
    local = datetime.fromtimestamp(now_ms / 1000, tz=timezone(tz))
    start = _start(window, local)
    if window is Window.HOUR:
        return start.strftime("h%Y-%m-%dT%H")
    if window is Window.DAY:
        return start.strftime("d%Y-%m-%d")
    if window is Window.WEEK:
        year, week, _ = start.isocalendar()
        return f"w{year}-W{week:02d}"
    return start.strftime("m%Y-%m")


def window_end(window: Window, now_ms: int, tz: str = "UTC") -> datetime | None:
    """When the window containing ``now_ms`` resets (``None`` for lifetime limits)."""
    if window is Window.TOTAL:
        return None
    local = datetime.fromtimestamp(now_ms / 1000, tz=timezone(tz))
    return _next(window, _start(window, local))
