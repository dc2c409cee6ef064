"""download_record_sensor: the portal's download record in the Dagster UI, as observations of order/manifest.

For each order with new entries since the cursor (the id of the newest entry seen), one
``AssetObservation`` on the order's partition of ``order/manifest`` sums up its record: downloads,
page views, the last download and whether the current portal version was fetched. An operator sees
it on the asset's partition without reading platform_db. The sensor requests no runs.

Counts only, never an entry: Dagster keeps observations for as long as the instance's event log,
with no retention of its own, while platform_db deletes each entry after
``portal.download_record_days`` (download_record_retention_sensor). A User-Agent or a client's
network copied into an observation would outlive that promise; ``GET /orders/{cfg_id}`` shows the
entries themselves for as long as they are kept.
"""

from __future__ import annotations

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from contracts.records import current_version
from order_pipeline.keys import MANIFEST
from resources.platform_db import PlatformDbResource

SENSOR_NAME = "download_record_sensor"
NOTHING = "—"


def _observation(platform_db: PlatformDbResource, cfg_id: str) -> AssetObservation:
    counts = platform_db.downloads.counts(cfg_id)
    current = current_version(platform_db.deliveries.portal_versions(cfg_id))
    if current is None:
        fetched = "no portal version published"
    else:
        fetched = "yes" if platform_db.downloads.fetched(cfg_id, current.version) else "no"
    last = counts.last_download_at
    return AssetObservation(
        asset_key=MANIFEST,
        partition=cfg_id,
        description="The customer's portal: page views and downloads in the download record",
        metadata={
            "downloads": MetadataValue.int(counts.downloads),
            "page views": MetadataValue.int(counts.page_views),
            "last download at": MetadataValue.text("never")
            if last is None
            else MetadataValue.timestamp(last),
            "current version": MetadataValue.text(NOTHING if current is None else f"v{current.version}"),
            "current version fetched": MetadataValue.text(fetched),
        },
    )


def download_record_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource
) -> SensorResult | SkipReason:
    after = int(context.cursor) if context.cursor else 0
    recorded = platform_db.downloads.orders_recorded_after(after)
    if not recorded:
        return SkipReason("no new portal page view or download")
    events = [_observation(platform_db, cfg_id) for cfg_id in recorded]
    return SensorResult(asset_events=events, cursor=str(max(recorded.values())))


def build_download_record_sensor(
    *, minimum_interval_seconds: int, default_status: DefaultSensorStatus
) -> SensorDefinition:
    """The sensor; it observes counts only (see the module's docstring)."""

    @sensor(
        name=SENSOR_NAME, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status
    )
    def download_record_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource
    ) -> SensorResult | SkipReason:
        """New portal page views and downloads -> an observation of order/manifest per order."""
        return download_record_sensor_tick(context, platform_db)

    return download_record_sensor
