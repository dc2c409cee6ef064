"""Where an order's assets stand in Dagster, asked of the Dagster webserver's GraphQL API.

The same webserver the API launches backfills and first runs at answers only indexed questions per
order: the latest materialization of each asset in the order's partition and the order's most
recent runs (by their partition tag), in one request; then, for the few runs that decide a status,
that one run's log (its failures, or the assets it planned). Nothing scans the event log.

Of the API, only ``order_pipeline.keys`` brings Dagster in (the assets' keys); Dagster itself is
reached over GraphQL alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from api.dagster_graphql import (
    AssetPath,
    DagsterGraphQL,
    DagsterUnreachable,
    LatestMaterialization,
    OrderRun,
    RunFailure,
    RunLog,
    StepFailure,
)
from order_pipeline.keys import APK, CFN_OR_ISO, CONFIG, EDP_ARTIFACTS, EMAIL, MANIFEST, AssetKey
from order_pipeline.step_errors import failure_cause

logger = logging.getLogger(__name__)

ORDER_ASSETS: tuple[AssetKey, ...] = (CONFIG, EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST, EMAIL)
# The order's most recent runs that decide running/failed; older runs only matter through the
# materializations they left, which are looked up by themselves.
RECENT_RUNS = 20
MAX_ERROR = 2000
# After the webserver could not be reached (not started yet, restarting, timed out), the next
# attempt waits this long, so order look-ups stay fast while Dagster is away.
ASK_AGAIN_AFTER_SECONDS = 15.0
# An order look-up waits this long for an answer, not as long as a launch may.
STATUS_READ_TIMEOUT_SECONDS = 10.0
# Dagster's RunStatus names of a run that has not ended.
RUNNING_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUSPENDED", "CANCELING"})
FAILURE = "FAILURE"

AssetState = Literal["materialized", "running", "failed", "not_started"]


class AssetStatusView(BaseModel):
    """One asset of one order as Dagster knows it."""

    status: AssetState
    # The newest materialization of this order's partition, whatever the status says now.
    last_materialized_at: datetime | None = None
    # The run the status comes from: the materializing, running or failed run.
    run_id: str | None = None
    error: str | None = None


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _step_error(failure: StepFailure) -> str:
    return _clip(failure_cause(failure.description, failure.error))


def _run_error(failure: RunFailure) -> str:
    if failure.error is not None:
        return _clip(failure.error.message)
    return _clip(failure.message or "the run failed")


def _step_failures(log: RunLog) -> tuple[dict[str, str], str | None]:
    """``({step key: reason}, run failure reason)`` of a failed run: each step's first failure."""
    steps: dict[str, str] = {}
    for failure in log.step_failures:
        if failure.step_key:
            steps.setdefault(failure.step_key, _step_error(failure))
    run_error = _run_error(log.run_failures[-1]) if log.run_failures else None
    return steps, run_error


class _RunLogs:
    """The logs of the few runs that decide a status, each read once."""

    def __init__(self, dagster: DagsterGraphQL) -> None:
        self._dagster = dagster
        self._logs: dict[str, RunLog] = {}

    def log(self, run_id: str) -> RunLog:
        if run_id not in self._logs:
            self._logs[run_id] = self._dagster.run_log(run_id)
        return self._logs[run_id]

    def targets(self, run: OrderRun, path: AssetPath) -> bool:
        """Whether the run materializes (or was to materialize) the asset at ``path``."""
        # Runs launched by sensors, backfills and the API name their assets; others (a whole job,
        # an in-process run) log the assets they plan to materialize when they are created.
        if run.asset_selection:
            return path in run.asset_selection
        return path in self.log(run.run_id).planned


def _asset_status(
    key: AssetKey,
    last: LatestMaterialization | None,
    runs: Sequence[OrderRun],
    logs: _RunLogs,
    labels: Mapping[str, str],
) -> AssetStatusView:
    materialized_at = last.at if last is not None else None
    settled = (
        AssetStatusView(status="materialized", last_materialized_at=materialized_at, run_id=last.run_id)
        if last is not None
        else AssetStatusView(status="not_started")
    )
    path = tuple(key.path)
    step_key = key.to_python_identifier()
    # Newest first: the newest run that targets the asset decides, unless it is older than the
    # newest materialization (which then came from elsewhere, e.g. a run beyond RECENT_RUNS).
    for run in runs:
        if not logs.targets(run, path):
            continue
        materialized_here = last is not None and last.run_id == run.run_id
        if last is not None and not materialized_here and run.creation_time < last.at.timestamp():
            return settled
        if run.status in RUNNING_STATUSES:
            if materialized_here:
                return settled
            return AssetStatusView(status="running", last_materialized_at=materialized_at, run_id=run.run_id)
        if run.status == FAILURE:
            steps, run_error = _step_failures(logs.log(run.run_id))
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
    dagster: DagsterGraphQL,
    cfg_id: str,
    assets: Sequence[AssetKey] = ORDER_ASSETS,
    recent_runs: int = RECENT_RUNS,
) -> dict[str, AssetStatusView]:
    """``{"order/config": AssetStatusView, ...}`` for the partition ``cfg_id``, in lineage order."""
    records = dagster.order_records(cfg_id, [tuple(key.path) for key in assets], recent_runs=recent_runs)
    logs = _RunLogs(dagster)
    labels = {key.to_python_identifier(): key.to_user_string() for key in assets}
    return {
        key.to_user_string(): _asset_status(key, records.latest[tuple(key.path)], records.runs, logs, labels)
        for key in assets
    }


class AssetStatusReader:
    """Asks the webserver per order and answers ``None`` whenever Dagster cannot say."""

    def __init__(
        self,
        dagster: DagsterGraphQL,
        *,
        ask_again_after_seconds: float = ASK_AGAIN_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dagster = dagster
        self._ask_again_after = ask_again_after_seconds
        self._clock = clock
        self._ask_again_at = 0.0

    @classmethod
    def for_url(cls, graphql_url: str) -> AssetStatusReader:
        return cls(DagsterGraphQL(graphql_url, read_timeout=STATUS_READ_TIMEOUT_SECONDS))

    def statuses(self, cfg_id: str) -> dict[str, AssetStatusView] | None:
        """The order's assets, or ``None`` when the webserver cannot be reached or read."""
        if self._clock() < self._ask_again_at:
            return None
        try:
            return order_asset_statuses(self._dagster, cfg_id)
        except DagsterUnreachable as exc:
            self._ask_again_at = self._clock() + self._ask_again_after
            logger.warning("Dagster webserver unavailable, asset status omitted: %s", exc)
            return None
        except Exception as exc:  # noqa: BLE001 - the rest of the order still answers
            logger.warning("reading the asset status of order %s from Dagster failed: %s", cfg_id, exc)
            return None
