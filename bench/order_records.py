"""What the stack recorded about an order: its Dagster runs (GraphQL) and its EDP job (state files).

Turned into the plain data of bench/order_phases.py. Read after a phase of the benchmark, so
the queries land outside the CPU measured for the phase.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests

from bench.order_phases import EdpTiming, RunTiming, StepTiming

PARTITION_TAG = "dagster/partition"
IN_PROGRESS = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
GRAPHQL_TIMEOUT_SECONDS = 30.0


class GraphQLError(RuntimeError):
    """Dagster's GraphQL API answered errors, or not the type asked for."""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=GRAPHQL_TIMEOUT_SECONDS
    )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    if body.get("errors"):
        raise GraphQLError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


RUNS_OF_PARTITION_QUERY = """
query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  __typename ... on PythonError { message }
  ... on Runs { results {
    runId status creationTime startTime endTime
    tags { key value }
    stepStats { stepKey status startTime endTime }
    eventConnection(limit: 40) { events { __typename ... on MessageEvent { timestamp } } } } } } }
"""

IN_PROGRESS_QUERY = """
query($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses}) {
  __typename ... on PythonError { message } ... on Runs { count } } }
"""


def _step(raw: dict[str, Any]) -> StepTiming:
    # Step "order__config" is asset order/config.
    return StepTiming(
        key=str(raw["stepKey"]).replace("__", "/"),
        status=raw.get("status"),
        start=raw.get("startTime"),
        end=raw.get("endTime"),
    )


def _first_event(raw: dict[str, Any], typename: str) -> float | None:
    # The run's own events come first in its event log (after the planned materializations and
    # checks: 9 for an order's run); timestamps are milliseconds, as text.
    events = (raw.get("eventConnection") or {}).get("events") or []
    stamps = [float(event["timestamp"]) / 1000 for event in events if event.get("__typename") == typename]
    return min(stamps, default=None)


def runs_of_partition(url: str, partition: str) -> list[RunTiming]:
    """Every run tagged with the partition (cfg_id), oldest first."""
    data = graphql(url, RUNS_OF_PARTITION_QUERY, {"tags": [{"key": PARTITION_TAG, "value": partition}]})[
        "runsOrError"
    ]
    if data["__typename"] != "Runs":
        raise GraphQLError(f"runsOrError for partition {partition}: {data}")
    runs = [
        RunTiming(
            run_id=raw["runId"],
            status=raw["status"],
            created=float(raw["creationTime"]),
            start=raw.get("startTime"),
            end=raw.get("endTime"),
            steps=tuple(_step(step) for step in raw.get("stepStats") or []),
            tags=tuple((tag["key"], tag["value"]) for tag in raw.get("tags") or []),
            launched=_first_event(raw, "RunStartingEvent"),
        )
        for raw in data["results"]
    ]
    return sorted(runs, key=lambda run: run.created)


def runs_in_progress(url: str) -> int:
    data = graphql(url, IN_PROGRESS_QUERY, {"statuses": IN_PROGRESS})["runsOrError"]
    if data["__typename"] != "Runs":
        raise GraphQLError(f"runsOrError of runs in progress: {data}")
    return int(data["count"])


def wait_until_no_run_in_progress(url: str, timeout: float, poll_seconds: float = 1.0) -> float:
    """Seconds waited until no run is queued or running; raises TimeoutError past ``timeout``.

    A phase's CPU is measured until here: an order's last run still writes its end events and
    tears its worker down after the email.
    """
    began = time.monotonic()
    while runs_in_progress(url) > 0:
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"runs still in progress after {timeout:.0f} s")
        time.sleep(poll_seconds)
    return time.monotonic() - began


def edp_jobs(edp_state_dir: Path) -> dict[str, EdpTiming]:
    """cfg_id -> its latest EDP job, from the stand-in's job files (``jobs/<job_id>.json``).

    The pipeline submits with Idempotency-Key = cfg_id, or ``<cfg_id>:attempt-<n>`` after a retry
    of a failed job; the newest job counts.
    """
    latest: dict[str, tuple[float, EdpTiming]] = {}
    for path in (edp_state_dir / "jobs").glob("*.json"):
        try:
            job = json.loads(path.read_text())
            cfg_id = str(job["idempotency_key"]).split(":", 1)[0]
            created = float(job["created_at"])
            complete = created + float(job["queued_seconds"]) + float(job["running_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cfg_id not in latest or created > latest[cfg_id][0]:
            latest[cfg_id] = (created, EdpTiming(created=created, complete=complete))
    return {cfg_id: timing for cfg_id, (_, timing) in latest.items()}
