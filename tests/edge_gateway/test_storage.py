from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_gateway.storage import SCHEMA_VERSION, MeasurementStore, Reading, StorageError, format_timestamp

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def reading(point: str, value: float, at: datetime = T0, device_id: str = "meter") -> Reading:
    return Reading(device_id=device_id, point=point, value=value, unit="W", at=at)


def test_readings_are_counted_and_the_latest_per_point_is_kept(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "gateway.db")
    store.add([reading("a", 1.0), reading("b", 2.0)])
    store.add([reading("a", 3.0, T0 + timedelta(seconds=1)), reading("a", 9.0, T0, device_id="pv")])
    assert store.count() == 4
    assert store.latest() == {
        "meter": {
            "a": {"value": 3.0, "unit": "W", "at": "2026-03-01T12:00:01.123Z"},
            "b": {"value": 2.0, "unit": "W", "at": "2026-03-01T12:00:00.123Z"},
        },
        "pv": {"a": {"value": 9.0, "unit": "W", "at": "2026-03-01T12:00:00.123Z"}},
    }
    assert store.history("meter", "a") == [
        (1.0, "2026-03-01T12:00:00.123Z"),
        (3.0, "2026-03-01T12:00:01.123Z"),
    ]
    store.close()


def test_measurements_survive_a_reopen_and_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "gateway.db"
    store = MeasurementStore(path)
    store.add([reading("a", 1.0)])
    store.close()
    reopened = MeasurementStore(path)
    assert reopened.count() == 1
    assert reopened.latest()["meter"]["a"]["value"] == 1.0
    reopened.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_database_of_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer gateway"):
        MeasurementStore(path)


def test_an_unwritable_location_is_reported_with_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match=f"cannot open the measurement database {blocker}/gateway.db"):
        MeasurementStore(blocker / "gateway.db")


def test_prune_deletes_old_readings_keeps_the_latest_and_the_count_right(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "gateway.db")
    old = T0 - timedelta(days=40)
    store.add([reading("a", 1.0, old), reading("b", 2.0, old)])
    store.add([reading("a", 3.0, T0)])
    assert store.prune(T0 - timedelta(days=30)) == 2
    assert store.count() == 1
    assert store.latest()["meter"]["b"]["value"] == 2.0, "the last known value of a point stays visible"
    assert store.history("meter", "b") == []
    store.close()


def test_timestamps_are_utc_and_sort_as_text() -> None:
    berlin = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 3, 1, 13, 0, tzinfo=berlin)) == "2026-03-01T12:00:00.000Z"
    earlier, later = format_timestamp(T0), format_timestamp(T0 + timedelta(milliseconds=1))
    assert earlier < later
