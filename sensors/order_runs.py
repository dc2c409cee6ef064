"""The Dagster runs of one order, as the sensors need to know them."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG, WILL_RETRY_TAG

PARTITION_TAG = "dagster/partition"
# A run in one of these may still change the order; a sensor leaves such an order to it.
ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def will_be_retried(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether Dagster's run retries take a failed run on (a worker that died, not a failed step)."""
    if WILL_RETRY_TAG in run.tags:
        return run.tags[WILL_RETRY_TAG] == "true"
    if not instance.run_retries_enabled:
        return False
    # Dagster tags the run just after storing its failure event: a look in between decides the
    # same way Dagster will.
    reason = run.tags.get(RUN_FAILURE_REASON_TAG)
    return auto_reexecution_should_retry_run(instance, run, RunFailureReason(reason) if reason else None)


def has_active_run(instance: DagsterInstance, cfg_id: str) -> bool:
    """A run of the order is queued or running, or its newest run crashed and Dagster will run it
    again: a sensor that started the order's next step now would race that retry."""
    partition = {PARTITION_TAG: cfg_id}
    if instance.get_run_records(RunsFilter(tags=partition, statuses=ACTIVE_STATUSES), limit=1):
        return True
    newest = instance.get_run_records(RunsFilter(tags=partition), limit=1)
    return (
        bool(newest)
        and newest[0].dagster_run.status == DagsterRunStatus.FAILURE
        and will_be_retried(instance, newest[0].dagster_run)
    )
