"""edp_sensor: polls EDP for orders waiting on it; complete -> build and deliver, failed -> order failed."""

from __future__ import annotations

import time

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason

from contracts.orders import OrderStatus
from delivery.edp_wait import failed_job_reason
from order_pipeline.keys import AFTER_EDP
from resources.edp import EdpClient, EdpError, EdpResource
from resources.platform_db import PlatformDbResource
from sensors.order_runs import has_active_run


def edp_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource, edp: EdpResource, budget_seconds: float
) -> SensorResult | SkipReason:
    waiting = platform_db.orders.orders_with_status(OrderStatus.EDP_PENDING)
    if not waiting:
        return SkipReason("no order waits on EDP")
    resource = edp.get_client()
    # No retries inside a tick: the next tick is the retry, and a hanging EDP must not eat the tick.
    client = EdpClient(
        resource.base_url, resource.timeout, retries=0, max_answer_bytes=resource.max_answer_bytes
    )
    deadline = time.monotonic() + budget_seconds
    requests: list[RunRequest] = []
    for order in waiting:
        if time.monotonic() + client.timeout > deadline:
            context.log.info("EDP poll budget used up; the remaining orders wait for the next tick")
            break
        # The order's own run waits for its job (order/edp_artifacts), or a build already runs.
        if order.edp_job_id is None or has_active_run(context.instance, order.cfg_id):
            continue
        try:
            job = client.get_job(order.edp_job_id)
        except (EdpError, OSError) as exc:
            context.log.warning(f"EDP job {order.edp_job_id} of order {order.cfg_id}: {type(exc).__name__}")
            continue
        if job.status == "complete":
            platform_db.orders.move(order.cfg_id, OrderStatus.BUILDING)
            requests.append(
                RunRequest(
                    partition_key=order.cfg_id,
                    asset_selection=AFTER_EDP,
                    run_key=f"edp:{order.cfg_id}:{order.edp_job_id}",
                    tags={"order/edp_job_id": order.edp_job_id},
                )
            )
        elif job.status == "failed":
            reason = failed_job_reason(order.edp_job_id, job)
            platform_db.orders.fail(order.cfg_id, reason)
            context.log.warning(f"order {order.cfg_id}: {reason}")
    if not requests:
        return SkipReason(f"{len(waiting)} order(s) still wait on EDP")
    return SensorResult(run_requests=requests)
