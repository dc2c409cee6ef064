"""order_sensor: received orders whose first run nobody started become partitions and a run each.

The API starts an order's first run itself right after the commit (api/order_runs.py); this
sensor is the safety net for an order the API could not start (Dagster unreachable, the API
stopped in between). Both claim the start in platform_db first, so an order never gets two.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetKey, RunRequest, SensorEvaluationContext, SensorResult, SkipReason

from order_pipeline.keys import FIRST_RUN_TAGS, first_run_key, orders_partitions
from resources.platform_db import PlatformDbResource

BATCH = 100


def order_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource, selection: Sequence[AssetKey]
) -> SensorResult | SkipReason:
    waiting = platform_db.orders.orders_without_first_run(limit=BATCH)
    cfg_ids = [order.cfg_id for order in waiting if platform_db.orders.claim_first_run(order.cfg_id)]
    if not cfg_ids:
        return SkipReason("no received order without a first run")
    context.log.info(f"starting the first run of {len(cfg_ids)} order(s) the API did not start")
    return SensorResult(
        run_requests=[
            # The run key never repeats for an order: a restarted daemon does not submit twice.
            RunRequest(
                partition_key=cfg_id,
                asset_selection=list(selection),
                run_key=first_run_key(cfg_id),
                tags=FIRST_RUN_TAGS,
            )
            for cfg_id in cfg_ids
        ],
        dynamic_partitions_requests=[orders_partitions.build_add_request(cfg_ids)],
    )
