"""download_record_sensor: the portal's download record shows on order/manifest's partition in Dagster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from dagster import AssetObservation, AssetRecordsFilter, DefaultSensorStatus, Definitions

from delivery.portal_links import PortalTokens
from order_pipeline.keys import MANIFEST
from platform_db.deliveries import DeliveryRepository
from platform_db.downloads import DownloadRepository
from sensors.download_record import SENSOR_NAME, build_download_record_sensor

if TYPE_CHECKING:
    from dagster._core.definitions.sensor_definition import SensorExecutionData

    from tests.sensors.conftest import Platform

UA = "Mozilla/5.0 (Windows NT 10.0) | <b>Edge</b>"
IPV4_NETWORK = "203.0.113.0/24"
IPV6_NETWORK = "2001:db8:abcd::/48"


class Record:
    """platform_db as the API leaves it: published portal versions and the download record."""

    def __init__(self, platform: Platform) -> None:
        self.deliveries = DeliveryRepository(platform.orders.engine)
        self.downloads = DownloadRepository(platform.orders.engine)
        self.platform = platform

    def delivered_order(self) -> str:
        cfg_id = self.platform.submit_order().cfg_id
        self.platform.add_partitions(cfg_id)
        self.publish(cfg_id, "run-1")
        return cfg_id

    def publish(self, cfg_id: str, run_id: str) -> int:
        version = self.deliveries.claim_portal_version(cfg_id, run_id).version
        self.deliveries.record_publication(
            cfg_id, version, manifest_key=f"portal/{cfg_id}/v{version}/manifest.json", artifact_count=2
        )
        return version

    def download(self, cfg_id: str, version: int, file: str, at: datetime | None = None) -> None:
        self.downloads.record(cfg_id, version=version, file=file, user_agent=UA, client=IPV4_NETWORK, at=at)

    def page_view(self, cfg_id: str, version: int | None = None) -> None:
        self.downloads.record(cfg_id, version=version, file=None, user_agent=UA, client=IPV6_NETWORK)


@pytest.fixture
def record(platform: Platform) -> Record:
    return Record(platform)


@pytest.fixture
def defs(platform: Platform) -> Definitions:
    """The sensor as platform_assets.definitions registers it, with the platform's resources."""
    sensor = build_download_record_sensor(
        minimum_interval_seconds=platform.settings.pipeline.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
    )
    return Definitions(sensors=[sensor], resources=platform.defs.resources)


def _tick(platform: Platform, defs: Definitions, cursor: str | None = None) -> SensorExecutionData:
    return platform.tick(SENSOR_NAME, cursor=cursor, defs=defs)


def _observations(data: SensorExecutionData) -> dict[str, AssetObservation]:
    events = list(data.asset_events)
    assert all(isinstance(event, AssetObservation) and event.asset_key == MANIFEST for event in events)
    return {str(event.partition): event for event in events if isinstance(event, AssetObservation)}


def _value(observation: AssetObservation, key: str) -> Any:
    return observation.metadata[key].value


def test_without_entries_the_sensor_skips(platform: Platform, defs: Definitions, record: Record) -> None:
    record.delivered_order()

    data = _tick(platform, defs)

    assert data.asset_events == []
    assert data.skip_message


def test_each_order_with_new_entries_gets_one_observation_of_its_record(
    platform: Platform, defs: Definitions, record: Record
) -> None:
    downloaded, viewed = record.delivered_order(), record.delivered_order()
    last = datetime.now(UTC) - timedelta(minutes=5)
    record.page_view(downloaded)
    record.download(downloaded, 1, "cfn.yaml", at=last - timedelta(minutes=1))
    record.download(downloaded, 1, "manifest.json", at=last)
    record.page_view(viewed)
    record.page_view(viewed, 1)

    observations = _observations(_tick(platform, defs))

    assert set(observations) == {downloaded, viewed}
    fetched = observations[downloaded]
    assert (_value(fetched, "downloads"), _value(fetched, "page views")) == (2, 1)
    assert _value(fetched, "last download at") == pytest.approx(last.timestamp())
    assert _value(fetched, "current version") == "v1"
    assert _value(fetched, "current version fetched") == "yes"
    looked = observations[viewed]
    assert (_value(looked, "downloads"), _value(looked, "page views")) == (0, 2)
    assert _value(looked, "last download at") == "never"
    assert _value(looked, "current version fetched") == "no"


def test_the_cursor_observes_an_order_again_only_after_new_entries(
    platform: Platform, defs: Definitions, record: Record
) -> None:
    first, second = record.delivered_order(), record.delivered_order()
    record.page_view(first)
    record.page_view(second)
    data = _tick(platform, defs)
    assert set(_observations(data)) == {first, second}

    again = _tick(platform, defs, cursor=data.cursor)
    assert again.asset_events == [] and again.skip_message

    version = record.publish(second, "run-2")
    record.download(second, version, "dtm.json")
    later = _tick(platform, defs, cursor=data.cursor)
    observations = _observations(later)
    assert set(observations) == {second}
    assert _value(observations[second], "current version") == f"v{version}"
    assert _value(observations[second], "current version fetched") == "yes"
    assert int(later.cursor or 0) > int(data.cursor or 0)


def test_the_observation_holds_counts_and_nothing_of_the_customers_browser_or_network(
    platform: Platform, defs: Definitions, record: Record
) -> None:
    cfg_id = record.delivered_order()
    start = datetime.now(UTC) - timedelta(hours=1)
    for minute in range(3):
        record.download(cfg_id, 1, f"file-{minute}.bin", at=start + timedelta(minutes=minute))
    record.page_view(cfg_id)

    # What the sensor daemon does with a tick's asset events: Dagster keeps them for good.
    for event in _tick(platform, defs).asset_events:
        platform.instance.report_runless_asset_event(event)
    [stored] = platform.instance.fetch_observations(
        AssetRecordsFilter(asset_key=MANIFEST, asset_partitions=[cfg_id]), limit=5
    ).records
    observation = stored.asset_observation
    assert observation is not None

    assert set(observation.metadata) == {
        "downloads",
        "page views",
        "last download at",
        "current version",
        "current version fetched",
    }
    assert (observation.metadata["downloads"].value, observation.metadata["page views"].value) == (3, 1)
    kept = repr(stored.event_log_entry)
    assert "current version fetched" in kept  # what is kept of the event, metadata included
    token = PortalTokens(platform.settings.portal_token_key()).token(cfg_id, 0)
    for recorded in (UA, "Mozilla", "Edge", IPV4_NETWORK, "203.0.113", IPV6_NETWORK, "2001:db8", token):
        assert recorded not in kept
    # No entry-by-entry table either: the files fetched stay in platform_db's record.
    assert "file-0.bin" not in kept


def test_an_order_without_a_published_version_says_so(
    platform: Platform, defs: Definitions, record: Record
) -> None:
    cfg_id = platform.submit_order().cfg_id
    platform.add_partitions(cfg_id)
    record.page_view(cfg_id)

    observation = _observations(_tick(platform, defs))[cfg_id]

    assert _value(observation, "current version fetched") == "no portal version published"


def test_the_observation_lands_on_the_orders_partition_of_order_manifest(
    platform: Platform, defs: Definitions, record: Record
) -> None:
    cfg_id, other = record.delivered_order(), record.delivered_order()
    record.download(cfg_id, 1, "cfn.yaml")

    # What the sensor daemon does with a tick's asset events.
    for event in _tick(platform, defs).asset_events:
        platform.instance.report_runless_asset_event(event)

    stored = platform.instance.fetch_observations(
        AssetRecordsFilter(asset_key=MANIFEST, asset_partitions=[cfg_id]), limit=5
    ).records
    assert len(stored) == 1
    observation = stored[0].asset_observation
    assert observation is not None and observation.metadata["downloads"].value == 1
    assert (
        platform.instance.fetch_observations(
            AssetRecordsFilter(asset_key=MANIFEST, asset_partitions=[other]), limit=5
        ).records
        == []
    )
