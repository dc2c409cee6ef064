"""order_run_failure_sensor: a failed run of an order marks the order failed, with the reason."""

from __future__ import annotations

from dagster import RunFailureSensorContext

from contracts.orders import OrderStatus
from resources.platform_db import PlatformDbResource

PARTITION_TAG = "dagster/partition"
MAX_REASON = 2000


def record_run_failure(context: RunFailureSensorContext, platform_db: PlatformDbResource) -> None:
    cfg_id = context.dagster_run.tags.get(PARTITION_TAG)
    if cfg_id is None:
        return
    order = platform_db.orders.get(cfg_id)
    if order is None or order.status == OrderStatus.FAILED:
        return
    # get_step_failure_events() hands back DagsterEvents (not event log entries).
    step_errors = [
        event.step_failure_data.error.message.strip()
        for event in context.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    reason = "; ".join(step_errors) or context.failure_event.message or "the run failed"
    platform_db.orders.set_status(cfg_id, OrderStatus.FAILED, error=f"run {context.dagster_run.run_id}: {reason}"[:MAX_REASON])
