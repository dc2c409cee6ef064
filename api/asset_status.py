"""Where an order's assets stand in Dagster, read from the Dagster instance of ``dagster.home``.

The API process opens the same instance as the webserver and daemon (SQLite under
``.local/dagster`` in local, dagster-postgres in beta) and asks it only indexed questions per
order: the latest materialization of each asset in the order's partition, the order's most recent
runs (by their partition tag), and for the few runs that decide a status, that one run's failure
(or planned-materialization) events. Nothing scans the event log.

Of the API, only this module imports Dagster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogEntry,
    EventLogRecord,
    RunRecord,
    RunsFilter,
)
from pydantic import BaseModel

from order_pipeline.keys import APK, CFN_OR_ISO, CONFIG, EDP_ARTIFACTS, EMAIL, MANIFEST
from order_pipeline.step_errors import step_failure_cause

logger = logging.getLogger(__name__)

ORDER_ASSETS: tuple[AssetKey, ...] = (CONFIG, EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST, EMAIL)
PARTITION_TAG = "dagster/partition"
# The order's most recent runs that decide running/failed; older runs only matter through the
# materializations they left, which are looked up by themselves.
RECENT_RUNS = 20
MAX_ERROR = 2000
# After the instance failed to open (no dagster.home yet, database down), the next attempt waits
# this long, so order look-ups stay fast while Dagster is away.
REOPEN_AFTER_SECONDS = 15.0
RUNNING_STATUSES = frozenset(
    {
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
        DagsterRunStatus.SUSPENDED,
        DagsterRunStatus.CANCELING,
    }
)

AssetState = Literal["materialized", "running", "failed", "not_started"]


class AssetStatusView(BaseModel):
    """One asset of one order as Dagster knows it."""

    status: AssetState
    # The newest materialization of this order's partition, whatever the status says now.
    last_materialized_at: datetime | None = None
    # The run the status comes from: the materializing, running or failed run.
    run_id: str | None = None
    error: str | None = None


class InstanceUnavailable(RuntimeError):
    """The Dagster instance cannot be opened (yet)."""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _step_error(entry: EventLogEntry) -> str:
    event = entry.dagster_event
    if event is None or event.step_failure_data is None:
        return entry.message or "the step failed"
    return _clip(step_failure_cause(event))


def _run_error(entry: EventLogEntry) -> str:
    event = entry.dagster_event
    data = event.event_specific_data if event is not None else None
    error = getattr(data, "error", None)
    if error is not None:
        return _clip(error.message)
    return _clip(entry.message or "the run failed")


class _RunEvents:
    """What the few runs that decide a status logged, each read once: one filtered read per run."""

    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        self._failures: dict[str, tuple[dict[str, str], str | None]] = {}
        self._planned: dict[str, frozenset[AssetKey]] = {}

    def failures(self, run_id: str) -> tuple[dict[str, str], str | None]:
        """``({step key: reason}, run failure reason)`` of a failed run."""
        if run_id not in self._failures:
            steps: dict[str, str] = {}
            run_error: str | None = None
            entries = self._instance.all_logs(
                run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
            )
            for entry in entries:
                if entry.dagster_event is None:
                    continue
                if entry.dagster_event.event_type == DagsterEventType.STEP_FAILURE and entry.step_key:
                    steps.setdefault(entry.step_key, _step_error(entry))
                elif entry.dagster_event.event_type == DagsterEventType.RUN_FAILURE:
                    run_error = _run_error(entry)
            self._failures[run_id] = (steps, run_error)
        return self._failures[run_id]

    def targets(self, record: RunRecord, key: AssetKey) -> bool:
        """Whether the run materializes (or was to materialize) ``key``."""
        run = record.dagster_run
        # Runs launched by sensors and backfills name their assets; others (a whole job, an
        # in-process run) log the assets they plan to materialize when they are created.
        if run.asset_selection:
            return key in run.asset_selection
        if run.run_id not in self._planned:
            entries = self._instance.all_logs(
                run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
            )
            self._planned[run.run_id] = frozenset(
                entry.dagster_event.asset_key
                for entry in entries
                if entry.dagster_event is not None and entry.dagster_event.asset_key is not None
            )
        return key in self._planned[run.run_id]


def _created(record: RunRecord) -> float:
    created = record.create_timestamp
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.timestamp()


def _asset_status(
    instance: DagsterInstance,
    key: AssetKey,
    cfg_id: str,
    runs: Sequence[RunRecord],
    events: _RunEvents,
    labels: Mapping[str, str],
) -> AssetStatusView:
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[cfg_id]), limit=1
    )
    last: EventLogRecord | None = found.records[0] if found.records else None
    materialized_at = datetime.fromtimestamp(last.timestamp, UTC) if last is not None else None
    settled = (
        AssetStatusView(status="materialized", last_materialized_at=materialized_at, run_id=last.run_id)
        if last is not None
        else AssetStatusView(status="not_started")
    )
    step_key = key.to_python_identifier()
    # Newest first: the newest run that targets the asset decides, unless it is older than the
    # newest materialization (which then came from elsewhere, e.g. a run beyond RECENT_RUNS).
    for record in runs:
        if not events.targets(record, key):
            continue
        run = record.dagster_run
        materialized_here = last is not None and last.run_id == run.run_id
        if last is not None and not materialized_here and _created(record) < last.timestamp:
            return settled
        if run.status in RUNNING_STATUSES:
            if materialized_here:
                return settled
            return AssetStatusView(status="running", last_materialized_at=materialized_at, run_id=run.run_id)
        if run.status == DagsterRunStatus.FAILURE:
            steps, run_error = events.failures(run.run_id)
            if step_key in steps:
                # Also when the step materialized first and a blocking check failed it afterwards.
                error = steps[step_key]
            elif materialized_here:
                return settled
            elif steps:
                failed_step, reason = next(iter(steps.items()))
                error = f"not materialized: {labels.get(failed_step, failed_step)} failed first: {reason}"
            else:
                error = f"not materialized: {run_error or 'the run failed'}"
            return AssetStatusView(
                status="failed", last_materialized_at=materialized_at, run_id=run.run_id, error=error
            )
        # Succeeded or canceled: what it materialized, if anything, is the newest materialization.
        return settled
    return settled


def order_asset_statuses(
    instance: DagsterInstance,
    cfg_id: str,
    assets: Sequence[AssetKey] = ORDER_ASSETS,
    recent_runs: int = RECENT_RUNS,
) -> dict[str, AssetStatusView]:
    """``{"order/config": AssetStatusView, ...}`` for the partition ``cfg_id``, in lineage order."""
    runs = list(instance.get_run_records(RunsFilter(tags={PARTITION_TAG: cfg_id}), limit=recent_runs))
    events = _RunEvents(instance)
    labels = {key.to_python_identifier(): key.to_user_string() for key in assets}
    return {
        key.to_user_string(): _asset_status(instance, key, cfg_id, runs, events, labels) for key in assets
    }


def open_instance_at(home: str | Path) -> DagsterInstance:
    """The instance of ``home`` (its dagster.yaml); never creates a home that is not there."""
    path = Path(home).expanduser().resolve()
    if not path.is_dir():
        raise InstanceUnavailable(f"the Dagster home {path} does not exist (yet)")
    return DagsterInstance.from_config(str(path))


class AssetStatusReader:
    """Opens the Dagster instance on first use and answers ``None`` whenever Dagster cannot."""

    def __init__(
        self,
        open_instance: Callable[[], DagsterInstance],
        *,
        reopen_after_seconds: float = REOPEN_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_instance = open_instance
        self._reopen_after = reopen_after_seconds
        self._clock = clock
        self._instance: DagsterInstance | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_home(cls, home: str | Path) -> AssetStatusReader:
        return cls(lambda: open_instance_at(home))

    def instance(self) -> DagsterInstance | None:
        with self._lock:
            if self._instance is None and self._clock() >= self._retry_at:
                try:
                    self._instance = self._open_instance()
                except Exception as exc:  # noqa: BLE001 - any failure means "no Dagster now"
                    self._retry_at = self._clock() + self._reopen_after
                    logger.warning("Dagster instance unavailable, asset status omitted: %s", exc)
            return self._instance

    def statuses(self, cfg_id: str) -> dict[str, AssetStatusView] | None:
        """The order's assets, or ``None`` when the instance cannot be opened or read."""
        instance = self.instance()
        if instance is None:
            return None
        try:
            return order_asset_statuses(instance, cfg_id)
        except Exception as exc:  # noqa: BLE001 - the rest of the order still answers
            logger.warning("reading the asset status of order %s from Dagster failed: %s", cfg_id, exc)
            return None

    def close(self) -> None:
        with self._lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None
