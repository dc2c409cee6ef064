"""The sweeper's decisions: what to do with an order whose status has not moved for too long.

Run monitoring (the Dagster instance's) ends runs whose worker died; this catches what no run is
left to move: an order whose status stands still with no run in Dagster's queue or in progress.
Each stuck order is put back on its way a bounded number of times, then failed with a reason.
Plain data in, decisions out; the ``stuck_order_sensor`` gathers the data and carries them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from contracts.orders import OrderStatus
from contracts.records import Order


@dataclass(frozen=True)
class StuckLimits:
    """How long each status may stand still (settings pipeline.stuck_*)."""

    received: timedelta
    building: timedelta
    # Longer than EDP's own timeout: beyond it the job will not complete any more.
    edp_job: timedelta
    max_resumes: int


@dataclass(frozen=True)
class SweepAction:
    cfg_id: str
    # resume_config: run order/config again; resume_build: run the steps after EDP again;
    # fail: the order is failed with ``reason``.
    kind: Literal["resume_config", "resume_build", "fail"]
    reason: str
    # Unique per order and stand-still: the same stuck state is never resumed twice.
    run_key: str


def plan_sweep(
    orders: Iterable[Order],
    *,
    now: datetime,
    limits: StuckLimits,
    active: frozenset[str],
    resumes: Mapping[str, int],
) -> list[SweepAction]:
    """Decisions for the in-flight ``orders``; ``active``: cfg_ids with a queued or running run;
    ``resumes``: how many times the sweeper already resumed each order."""
    actions: list[SweepAction] = []
    for order in orders:
        if order.cfg_id in active:
            continue
        still = now - order.updated_at
        seconds = int(still.total_seconds())
        key_suffix = f"{order.cfg_id}:{order.updated_at.isoformat()}"
        if order.status is OrderStatus.EDP_PENDING:
            if still > limits.edp_job:
                actions.append(
                    SweepAction(
                        order.cfg_id,
                        "fail",
                        f"EDP job {order.edp_job_id} did not finish within {int(limits.edp_job.total_seconds())} s; "
                        f"POST /orders/{order.cfg_id}/retry submits a new job",
                        f"sweep:fail:{key_suffix}",
                    )
                )
            continue
        limit = limits.received if order.status is OrderStatus.RECEIVED else limits.building
        if order.status not in (OrderStatus.RECEIVED, OrderStatus.BUILDING) or still <= limit:
            continue
        done = resumes.get(order.cfg_id, 0)
        if done >= limits.max_resumes:
            actions.append(
                SweepAction(
                    order.cfg_id,
                    "fail",
                    f"the order stood still in {order.status.value} for {seconds} s with no run in Dagster, "
                    f"also after {done} automatic resume(s); see its runs in the Dagster UI",
                    f"sweep:fail:{key_suffix}",
                )
            )
            continue
        kind: Literal["resume_config", "resume_build"] = (
            "resume_config" if order.status is OrderStatus.RECEIVED else "resume_build"
        )
        actions.append(
            SweepAction(
                order.cfg_id,
                kind,
                f"stood still in {order.status.value} for {seconds} s with no run in Dagster; resumed ({done + 1} of {limits.max_resumes})",
                f"sweep:{kind}:{key_suffix}",
            )
        )
    return actions
