"""The one Definitions of the platform, loaded by workspace.yaml."""

from datetime import timedelta

from dagster import (
    AssetsDefinition,
    DefaultSensorStatus,
    Definitions,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    in_process_executor,
    run_failure_sensor,
    sensor,
)

from delivery.order_sweep import StuckLimits
from order_pipeline.keys import first_run_selection
from platform_assets.order import build_order_assets, step_retry_policy
from platform_assets.portal_yank import build_yank_job
from platform_config.settings import Settings, load_settings
from resources.artifacts import ArtifactBucketResource
from resources.edp import EdpResource
from resources.pipeline import build_resources
from resources.platform_db import PlatformDbResource
from sensors.apk import apk_sensor_tick
from sensors.download_record import build_download_record_sensor
from sensors.download_record_retention import build_download_record_retention_sensor
from sensors.edp import edp_sensor_tick
from sensors.orders import order_sensor_tick
from sensors.run_failures import record_run_failure
from sensors.stuck_orders import stuck_order_sensor_tick


def order_assets(settings: Settings) -> list[AssetsDefinition]:
    """The order's six assets with the stage's step retries."""
    pipeline = settings.pipeline
    return build_order_assets(step_retry_policy(pipeline.step_retries, pipeline.step_retry_delay_seconds))


def build_definitions(settings: Settings) -> Definitions:
    assets = order_assets(settings)
    interval = settings.pipeline.sensor_interval_seconds
    status = DefaultSensorStatus.RUNNING if settings.pipeline.sensors_running else DefaultSensorStatus.STOPPED
    budget = settings.pipeline.edp_poll_budget_seconds
    first_run = first_run_selection(settings.pipeline.edp_wait_in_run_seconds)

    @sensor(name="order_sensor", target=assets, minimum_interval_seconds=interval, default_status=status)
    def order_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource
    ) -> SensorResult | SkipReason:
        """Received orders whose first run the API did not start -> partitions and a run each."""
        return order_sensor_tick(context, platform_db, first_run)

    @sensor(name="edp_sensor", target=assets, minimum_interval_seconds=interval, default_status=status)
    def edp_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource, edp: EdpResource
    ) -> SensorResult | SkipReason:
        """Orders waiting on EDP: complete -> build and deliver; failed -> order failed with EDP's reason."""
        return edp_sensor_tick(context, platform_db, edp, budget)

    @sensor(name="apk_sensor", target=assets, minimum_interval_seconds=interval, default_status=status)
    def apk_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource, artifacts: ArtifactBucketResource
    ) -> SensorResult | SkipReason:
        """The apk/ prefix: an APK there resumes orders waiting for one."""
        return apk_sensor_tick(context, platform_db, artifacts)

    sweep_limits = StuckLimits(
        received=timedelta(seconds=settings.pipeline.stuck_received_seconds),
        building=timedelta(seconds=settings.pipeline.stuck_building_seconds),
        edp_job=timedelta(seconds=settings.pipeline.edp_job_timeout_seconds),
        max_resumes=settings.pipeline.stuck_max_resumes,
    )

    @sensor(
        name="stuck_order_sensor",
        target=assets,
        minimum_interval_seconds=settings.pipeline.sweep_interval_seconds,
        default_status=status,
    )
    def stuck_order_sensor(
        context: SensorEvaluationContext, platform_db: PlatformDbResource
    ) -> SensorResult | SkipReason:
        """Orders standing still with no run left in Dagster: resumed a bounded number of times, then failed."""
        return stuck_order_sensor_tick(context, platform_db, sweep_limits)

    @run_failure_sensor(
        name="order_run_failure_sensor", minimum_interval_seconds=interval, default_status=status
    )
    def order_run_failure_sensor(context: RunFailureSensorContext, platform_db: PlatformDbResource) -> None:
        """A failed run marks its order failed, with the step's error as the reason."""
        record_run_failure(context, platform_db)

    download_record_sensor = build_download_record_sensor(
        minimum_interval_seconds=interval, default_status=status
    )
    download_record_retention_sensor = build_download_record_retention_sensor(
        days=settings.portal.download_record_days, default_status=status
    )

    return Definitions(
        assets=assets,
        jobs=[build_yank_job()],
        # An order's steps run one after another anyway; in one process they skip a Python start
        # and a definitions import (seconds each) per step.
        executor=in_process_executor,
        sensors=[
            order_sensor,
            edp_sensor,
            apk_sensor,
            stuck_order_sensor,
            order_run_failure_sensor,
            download_record_sensor,
            download_record_retention_sensor,
        ],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
