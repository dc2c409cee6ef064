"""order_run_failure_sensor: a failed run of an order records the failure on the order, with the cause.

The cause is what a person can act on (SES's, S3's, EDP's or a validation's own words), not
Dagster's wrapper ("Error occurred while executing op ..."): the wrapper's chain of causes is
followed to the error the step's code raised.
"""

from __future__ import annotations

from dagster import RunFailureSensorContext

from contracts.orders import OrderStatus
from delivery.edp_artifact_policy import readable_reason
from order_pipeline.keys import OPERATOR_JOBS
from order_pipeline.step_errors import step_failure_cause
from resources.platform_db import PlatformDbResource
from sensors.order_runs import PARTITION_TAG, will_be_retried

MAX_REASON = 2000


def _will_be_retried(context: RunFailureSensorContext) -> bool:
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    return will_be_retried(context.instance, run)


def _retried_since(context: RunFailureSensorContext, platform_db: PlatformDbResource, cfg_id: str) -> bool:
    retried_at = platform_db.order_retries.latest_at(cfg_id)
    if retried_at is None:
        return False
    record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
    if record is None:
        return False
    began = record.start_time or record.create_timestamp.timestamp()
    return retried_at.timestamp() > began


def record_run_failure(context: RunFailureSensorContext, platform_db: PlatformDbResource) -> None:
    tags = context.dagster_run.tags
    if context.dagster_run.job_name in OPERATOR_JOBS:
        return
    if _will_be_retried(context):
        # The retry run takes the order on; its own failure, if any, is recorded then.
        context.log.info(f"run {context.dagster_run.run_id} will be retried; the order keeps its status")
        return
    cfg_id = tags.get(PARTITION_TAG)
    order = platform_db.orders.get(cfg_id) if cfg_id is not None else None
    # A step that failed the order itself (EDP's reason, an invalid dtm.json) said it best.
    if order is None or order.status == OrderStatus.FAILED:
        return
    if _retried_since(context, platform_db, order.cfg_id):
        # The step failed the order, an operator retried it, and only then did this tick see the
        # run: the failure is the one the retry answers, not news about the retry.
        context.log.info(f"order {order.cfg_id} was retried after run {context.dagster_run.run_id} began")
        return
    # get_step_failure_events() hands back DagsterEvents (not event log entries).
    step_errors = [
        # Step "order__apk" is asset order/apk, as the UI and GET /orders name it.
        f"{(event.step_key or '').replace('__', '/')}: {step_failure_cause(event)}"
        for event in context.get_step_failure_events()
    ]
    reason = "; ".join(step_errors) or context.failure_event.message or "the run failed"
    # Presigned query strings and control characters out, capped: GET /orders returns it.
    platform_db.orders.fail(
        order.cfg_id, readable_reason(f"run {context.dagster_run.run_id}: {reason}", MAX_REASON)
    )
