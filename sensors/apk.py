"""apk_sensor: watches apk/; an APK there lets orders waiting for one go on."""

from __future__ import annotations

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason

from contracts.orders import OrderStatus
from delivery.apk import APK_PREFIX, newest_apk
from order_pipeline.keys import AFTER_APK
from resources.artifacts import ArtifactBucketResource
from resources.platform_db import PlatformDbResource


def apk_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource, artifacts: ArtifactBucketResource
) -> SensorResult | SkipReason:
    newest = newest_apk(artifacts.get_store().keys(APK_PREFIX))
    if newest is None:
        return SkipReason("no APK under apk/ yet")
    waiting = platform_db.orders.orders_with_status(OrderStatus.WAITING_FOR_APK)
    requests = [
        # One run per order and APK: the same APK never resumes an order twice.
        RunRequest(
            partition_key=order.cfg_id, asset_selection=AFTER_APK, run_key=f"apk:{order.cfg_id}:{newest.key}"
        )
        for order in waiting
    ]
    if newest.key != context.cursor:
        context.log.info(f"newest APK is {newest.key} (version {newest.version})")
    return SensorResult(run_requests=requests, cursor=newest.key)
