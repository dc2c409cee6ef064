"""The Dagster runs of one order, as the sensors need to know them."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PARTITION_TAG = "dagster/partition"
# A run in one of these may still change the order; a sensor leaves such an order to it.
ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def has_active_run(instance: DagsterInstance, cfg_id: str) -> bool:
    return bool(instance.get_run_records(RunsFilter(tags={PARTITION_TAG: cfg_id}, statuses=ACTIVE_STATUSES), limit=1))
