"""The Dagster runs of one order, as the sensors need to know them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRecord, RunsFilter
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
# Dagster submits a run right after creating it; one still NOT_STARTED after this long was left
# behind by a process killed in between (kill -9 of `dagster dev` mid-launch).
NOT_STARTED_ORPHAN_AFTER = timedelta(minutes=3)


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


def _is_orphan(record: RunRecord, now: datetime) -> bool:
    """A run created but never submitted: whoever created it (the webserver, the daemon's retry)
    died in between, and nothing will ever start it."""
    return (
        record.dagster_run.status == DagsterRunStatus.NOT_STARTED
        and now - record.create_timestamp > NOT_STARTED_ORPHAN_AFTER
    )


def has_active_run(instance: DagsterInstance, cfg_id: str) -> bool:
    """A run of the order is queued or running, or its newest run crashed and Dagster will run it
    again: a sensor that started the order's next step now would race that retry."""
    partition = {PARTITION_TAG: cfg_id}
    now = datetime.now(UTC)
    active = instance.get_run_records(RunsFilter(tags=partition, statuses=ACTIVE_STATUSES))
    if any(not _is_orphan(record, now) for record in active):
        return True
    newest = instance.get_run_records(RunsFilter(tags=partition), limit=1)
    return (
        bool(newest)
        and newest[0].dagster_run.status == DagsterRunStatus.FAILURE
        and will_be_retried(instance, newest[0].dagster_run)
    )
