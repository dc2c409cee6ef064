"""stuck_order_sensor: orders whose status stands still with no run left are resumed, or failed.

The decisions are ``delivery.order_sweep.plan_sweep``'s; this gathers what it needs (in-flight
orders from platform_db, the Dagster instance's queued and running runs per order, earlier
resumes) and turns each decision into a run request or a failed order.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import RunRequest, RunsFilter, SensorEvaluationContext, SensorResult, SkipReason

from contracts.orders import IN_FLIGHT
from delivery.order_sweep import StuckLimits, SweepAction, plan_sweep
from order_pipeline.keys import AFTER_EDP, CONFIG, EDP_SUBMIT_TAG
from resources.platform_db import PlatformDbResource
from sensors.order_runs import PARTITION_TAG, has_active_run

SWEEP_TAG = "platform/sweep"
RESUME_KINDS = ("resume_config", "resume_build")


def _run_request(action: SweepAction, edp_job_id: str | None) -> RunRequest:
    tags: dict[str, str] = {SWEEP_TAG: action.kind}
    if action.kind == "resume_config":
        return RunRequest(
            partition_key=action.cfg_id,
            asset_selection=[CONFIG],
            run_key=action.run_key,
            tags={**tags, EDP_SUBMIT_TAG: "submit"},
        )
    if edp_job_id is not None:
        tags["order/edp_job_id"] = edp_job_id
    return RunRequest(
        partition_key=action.cfg_id, asset_selection=AFTER_EDP, run_key=action.run_key, tags=tags
    )


def stuck_order_sensor_tick(
    context: SensorEvaluationContext, platform_db: PlatformDbResource, limits: StuckLimits
) -> SensorResult | SkipReason:
    in_flight = platform_db.orders.orders_with_status(*IN_FLIGHT)
    if not in_flight:
        return SkipReason("no order in flight")
    instance = context.instance
    active: set[str] = set()
    resumes: dict[str, int] = {}
    for order in in_flight:
        if has_active_run(instance, order.cfg_id):
            active.add(order.cfg_id)
            continue
        resumed = instance.get_run_records(
            RunsFilter(tags={PARTITION_TAG: order.cfg_id, SWEEP_TAG: list(RESUME_KINDS)})
        )
        resumes[order.cfg_id] = len(resumed)
    actions = plan_sweep(
        in_flight, now=datetime.now(UTC), limits=limits, active=frozenset(active), resumes=resumes
    )
    by_id = {order.cfg_id: order for order in in_flight}
    requests: list[RunRequest] = []
    for action in actions:
        context.log.warning(f"order {action.cfg_id}: {action.reason}")
        if action.kind == "fail":
            platform_db.orders.fail(action.cfg_id, action.reason)
        else:
            requests.append(_run_request(action, by_id[action.cfg_id].edp_job_id))
    if not actions:
        return SkipReason(f"{len(in_flight)} order(s) in flight, none stuck")
    return SensorResult(run_requests=requests)
