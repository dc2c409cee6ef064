"""download_record_retention_sensor: entries of the portal's download record expire on time, with or without traffic.

Each entry keeps a User-Agent and a client's network, and the operator promises to keep them
``portal.download_record_days`` and no longer. The API deletes old entries as it records new ones
(``api.download_record.DownloadRecorder``), but an order whose portal nobody opens any more would
keep its entries for good; this sensor deletes them whatever the traffic.

Why a sensor and not a schedule: a schedule can only request runs, and a run of a job that deletes
rows costs a run launch, a process and an event log entry each time, for one indexed DELETE. A
sensor's tick is evaluated by the code location at the sensor daemon's request, with no run, so the
tick does the DELETE itself, requests nothing, and answers a ``SkipReason`` with the count: the
sensor's tick history in the Dagster UI shows each expiry, and a failing platform_db shows as a
failed tick. It ticks every :data:`EXPIRY_INTERVAL_SECONDS`, so an entry outlives its days by at
most that long. It starts running or stopped with the other sensors (``pipeline.sensors_running``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import DefaultSensorStatus, SensorDefinition, SensorEvaluationContext, SkipReason, sensor

from resources.platform_db import PlatformDbResource

SENSOR_NAME = "download_record_retention_sensor"
# One indexed DELETE an hour: cheap, and an hour is nothing against a retention counted in days.
EXPIRY_INTERVAL_SECONDS = 3600


def download_record_retention_tick(platform_db: PlatformDbResource, days: int) -> SkipReason:
    expired = platform_db.downloads.expire(datetime.now(UTC) - timedelta(days=days))
    # Only a count: Dagster keeps the tick history, and the entries' contents must not outlive them.
    return SkipReason(f"{expired} download record entries older than {days} days deleted")


def build_download_record_retention_sensor(
    *,
    days: int,
    default_status: DefaultSensorStatus,
    minimum_interval_seconds: int = EXPIRY_INTERVAL_SECONDS,
) -> SensorDefinition:
    """The sensor; ``days``: how long an entry is kept (``portal.download_record_days``)."""

    @sensor(
        name=SENSOR_NAME, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status
    )
    def download_record_retention_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource
    ) -> SkipReason:
        """Deletes download record entries older than portal.download_record_days; requests no runs."""
        return download_record_retention_tick(platform_db, days)

    return download_record_retention_sensor
