"""order_sensor: new orders in platform_db become partitions and a ``config`` run each."""

from __future__ import annotations

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason

from platform_assets.partitions import CONFIG, orders_partitions
from resources.platform_db import PlatformDbResource

BATCH = 100
EDP_SUBMIT_TAG = "platform/edp"


def order_sensor_tick(context: SensorEvaluationContext, platform_db: PlatformDbResource) -> SensorResult | SkipReason:
    after = int(context.cursor or 0)
    new_orders = platform_db.orders.orders_after(after, limit=BATCH)
    if not new_orders:
        return SkipReason(f"no orders after seq {after}")
    cfg_ids = [order.cfg_id for order in new_orders]
    return SensorResult(
        run_requests=[
            # The run key never repeats for an order: a restarted daemon does not submit twice.
            RunRequest(
                partition_key=cfg_id,
                asset_selection=[CONFIG],
                run_key=f"config:{cfg_id}",
                # The run queue caps how many runs submit EDP jobs at once by this tag.
                tags={EDP_SUBMIT_TAG: "submit"},
            )
            for cfg_id in cfg_ids
        ],
        dynamic_partitions_requests=[orders_partitions.build_add_request(cfg_ids)],
        cursor=str(new_orders[-1].seq),
    )
