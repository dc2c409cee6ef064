"""download_record_sensor: the portal's download record in the Dagster UI, as observations of order/manifest.

For each order with new entries since the cursor (the id of the newest entry seen), one
``AssetObservation`` on the order's partition of ``order/manifest`` sums up its record: downloads,
page views, the last download, whether the current portal version was fetched, and the latest
entries as a table. An operator sees it on the asset's partition without reading platform_db. The
record holds no token and only the client's network, so neither does the observation. The sensor
requests no runs.
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
# What could end a table cell or start markup, HTML or an entity inside one; escaped with a
# backslash, CommonMark shows each as itself. A User-Agent is the customer's browser's to choose.
_MARKUP = frozenset("\\|`*_[]<>&~")


def _md(text: str) -> str:
    plain = " ".join(text.split())
    return "".join(f"\\{char}" if char in _MARKUP else char for char in plain) or NOTHING


def _recent_table(platform_db: PlatformDbResource, cfg_id: str, recent: int) -> str:
    lines = ["| at (UTC) | version | file | client | user agent |", "| --- | --- | --- | --- | --- |"]
    for entry in platform_db.downloads.recent(cfg_id, recent):
        cells = (
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            "landing page" if entry.version is None else f"v{entry.version}",
            "page view" if entry.file is None else entry.file,
            entry.client or NOTHING,
            entry.user_agent or NOTHING,
        )
        lines.append("| " + " | ".join(_md(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _observation(platform_db: PlatformDbResource, cfg_id: str, recent: int) -> AssetObservation:
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
            "recent": MetadataValue.md(_recent_table(platform_db, cfg_id, recent)),
        },
    )


def download_record_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource, recent: int
) -> SensorResult | SkipReason:
    after = int(context.cursor) if context.cursor else 0
    recorded = platform_db.downloads.orders_recorded_after(after)
    if not recorded:
        return SkipReason("no new portal page view or download")
    events = [_observation(platform_db, cfg_id, recent) for cfg_id in recorded]
    return SensorResult(asset_events=events, cursor=str(max(recorded.values())))


def build_download_record_sensor(
    *, minimum_interval_seconds: int, default_status: DefaultSensorStatus, recent: int
) -> SensorDefinition:
    """The sensor; ``recent``: how many of an order's latest entries the table shows (portal.recent_downloads)."""

    @sensor(
        name=SENSOR_NAME, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status
    )
    def download_record_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource
    ) -> SensorResult | SkipReason:
        """New portal page views and downloads -> an observation of order/manifest per order."""
        return download_record_sensor_tick(context, platform_db, recent)

    return download_record_sensor
