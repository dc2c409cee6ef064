from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from service_kit.timestamps import as_utc


def test_a_moment_without_a_zone_is_taken_as_utc() -> None:
    assert as_utc(datetime(2026, 1, 2, 3, 4, 5)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert as_utc(datetime(2026, 1, 2, 3, 4, 5)).tzinfo is UTC


def test_a_moment_in_another_zone_is_the_same_instant_in_utc() -> None:
    berlin = datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    moved = as_utc(berlin)
    assert moved == berlin
    assert (moved.hour, moved.tzinfo) == (3, UTC)
