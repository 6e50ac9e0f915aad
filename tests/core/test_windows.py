from __future__ import annotations

from datetime import UTC, datetime

import pytest

from execbudget.errors import ConfigurationError
from execbudget.windows import Window, window_end, window_id


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@pytest.mark.parametrize(
    ("window", "when", "wid", "end"),
    [
        (
            Window.HOUR,
            datetime(2026, 12, 31, 23, 30, tzinfo=UTC),
            "h2026-12-31T23",
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            Window.DAY,
            datetime(2026, 2, 28, 12, tzinfo=UTC),
            "d2026-02-28",
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        (
            Window.WEEK,
            datetime(2026, 12, 31, tzinfo=UTC),
            "w2026-W53",
            datetime(2027, 1, 4, tzinfo=UTC),
        ),
        (
            Window.MONTH,
            datetime(2026, 12, 15, tzinfo=UTC),
            "m2026-12",
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_window_ids_and_ends(window: Window, when: datetime, wid: str, end: datetime) -> None:
    assert window_id(window, ms(when)) == wid
    assert window_end(window, ms(when)) == end


def test_total_never_resets() -> None:
    assert window_id(Window.TOTAL, 0) == "total"
    assert window_end(Window.TOTAL, 0) is None


def test_timezone_moves_the_day_boundary() -> None:
    late_utc = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # already June 2 in Tokyo
    assert window_id(Window.DAY, ms(late_utc), "Asia/Tokyo") == "d2026-06-02"
    end = window_end(Window.DAY, ms(late_utc), "Asia/Tokyo")
    assert end is not None and end.astimezone(UTC) == datetime(2026, 6, 2, 15, tzinfo=UTC)


def test_dst_day_is_23_hours_and_hours_do_not_repeat() -> None:
    # Europe/Paris springs forward on 2026-03-29: that day has 23 hours.
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    end = window_end(Window.DAY, ms(start), "Europe/Paris")
    assert end is not None
    assert end.astimezone(UTC) == datetime(2026, 3, 29, 22, tzinfo=UTC)
    ids = {window_id(Window.HOUR, ms(start) + h * 3_600_000, "Europe/Paris") for h in range(6)}
    assert len(ids) == 6


def test_unknown_timezone() -> None:
    with pytest.raises(ConfigurationError, match="IANA"):
        window_id(Window.DAY, 0, "Mars/Olympus")
