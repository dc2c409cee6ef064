"""download_record_retention_sensor: old entries of the portal's download record go without any portal request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from dagster import DefaultSensorStatus, Definitions

from platform_db.downloads import DownloadRepository
from sensors.download_record_retention import SENSOR_NAME, build_download_record_retention_sensor

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform

DAYS = 30


@pytest.fixture
def downloads(platform: Platform) -> DownloadRepository:
    return DownloadRepository(platform.orders.engine)


@pytest.fixture
def defs(platform: Platform) -> Definitions:
    sensor = build_download_record_retention_sensor(days=DAYS, default_status=DefaultSensorStatus.RUNNING)
    return Definitions(sensors=[sensor], resources=platform.defs.resources)


def _files(downloads: DownloadRepository, cfg_id: str) -> list[str | None]:
    return [entry.file for entry in downloads.recent(cfg_id, 100)]


def test_a_tick_deletes_what_is_older_than_the_retention_and_keeps_the_rest(
    platform: Platform, defs: Definitions, downloads: DownloadRepository
) -> None:
    cfg_id = platform.submit_order().cfg_id
    now = datetime.now(UTC)
    for file, age in (("expired.bin", timedelta(days=DAYS, hours=1)), ("kept.bin", timedelta(days=DAYS - 1))):
        downloads.record(
            cfg_id, version=1, file=file, user_agent="curl/8.5.0", client="203.0.113.0/24", at=now - age
        )

    data = platform.tick(SENSOR_NAME, defs=defs)

    assert _files(downloads, cfg_id) == ["kept.bin"]
    # Nothing to launch: the tick did the work and says how much.
    assert data.run_requests == []
    assert data.skip_message is not None and data.skip_message.startswith("1 ")
    assert "curl" not in data.skip_message and "203.0.113" not in data.skip_message

    again = platform.tick(SENSOR_NAME, defs=defs)
    assert again.skip_message is not None and again.skip_message.startswith("0 ")
    assert _files(downloads, cfg_id) == ["kept.bin"]


def test_the_platforms_definitions_expire_by_the_configured_days(
    platform: Platform, downloads: DownloadRepository
) -> None:
    cfg_id = platform.submit_order().cfg_id
    days = platform.settings.portal.download_record_days
    now = datetime.now(UTC)
    downloads.record(
        cfg_id, version=None, file=None, user_agent=None, client=None, at=now - timedelta(days=days, hours=1)
    )
    downloads.record(
        cfg_id, version=None, file="kept.bin", user_agent=None, client=None, at=now - timedelta(days=days - 1)
    )

    platform.tick(SENSOR_NAME)

    assert _files(downloads, cfg_id) == ["kept.bin"]
