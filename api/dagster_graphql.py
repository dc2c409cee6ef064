"""The API's one way to Dagster: the webserver's GraphQL API.

``launchPartitionBackfill`` for re-deliveries and retries (the backfill daemon submits their runs);
``addDynamicPartition`` + ``launchRun`` for an order's first run, which goes to the run queue at once;
``runsOrError``, ``assetOrError`` and a run's ``eventConnection`` for where an order's assets stand
(api/asset_status.py decides the status from them).

Plain HTTP (requests) and pydantic, no Dagster import: the API process talks to the webserver the
way the UI does. Every failure becomes a :class:`DagsterLaunchError` whose message is safe to show a
client: no stack trace, no response body beyond Dagster's own error message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

CONNECT_TIMEOUT_SECONDS = 5.0
# Launching an asset backfill only stores it (the daemon submits its runs), so this is generous.
READ_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE = 500

LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess {
      backfillId
      launchedRunIds
    }
    ... on Error {
      message
    }
  }
}
"""


ADD_DYNAMIC_PARTITION = """
mutation AddDynamicPartition($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on Error {
      message
    }
  }
}
"""

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess {
      run {
        runId
      }
    }
    ... on Error {
      message
    }
  }
}
"""

REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location {
          name
        }
        jobs {
          name
        }
      }
    }
    ... on Error {
      message
    }
  }
}
"""

RUN_LOG = """
query RunLog($runId: ID!, $cursor: String, $limit: Int!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      eventConnection(afterCursor: $cursor, limit: $limit) {
        cursor
        hasMore
        events {
          __typename
          ... on ExecutionStepFailureEvent {
            stepKey
            message
            error {
              ...ErrorChain
            }
            failureMetadata {
              description
            }
          }
          ... on RunFailureEvent {
            message
            error {
              ...ErrorChain
            }
          }
          ... on AssetMaterializationPlannedEvent {
            assetKey {
              path
            }
          }
        }
      }
    }
    ... on Error {
      message
    }
  }
}

fragment ErrorChain on PythonError {
  message
  causes {
    message
  }
}
"""

# Dagster's implicit job over all assets: a run of any asset selection is a run of it.
ASSET_JOB = "__ASSET_JOB"
# The tag that names a run's partition: an order's runs carry its cfg_id in it.
PARTITION_TAG = "dagster/partition"
# A run's log is read in pages of this many events; a run of an order logs about a hundred.
RUN_LOG_PAGE = 1000
# A log longer than this (a step printing without end) is read as far as this goes.
RUN_LOG_MAX_PAGES = 20

# The asset status reads, by operation name: the only operations that launch nothing.
ORDER_RECORDS_OPERATION = "OrderRecords"
RUN_LOG_OPERATION = "RunLog"
STATUS_OPERATIONS = frozenset({ORDER_RECORDS_OPERATION, RUN_LOG_OPERATION})

AssetPath = tuple[str, ...]


def order_records_query(assets: int) -> str:
    """The order's newest runs and, per asset (variables ``$asset0`` ...), its newest
    materialization in the order's partition: one request for all of them."""
    variables = "".join(f", $asset{index}: [String!]!" for index in range(assets))
    fields = "".join(
        f"""
  asset{index}: assetOrError(assetKey: {{path: $asset{index}}}) {{
    __typename
    ... on Asset {{
      assetMaterializations(partitions: [$partition], limit: 1) {{
        runId
        timestamp
      }}
    }}
  }}"""
        for index in range(assets)
    )
    return f"""
query {ORDER_RECORDS_OPERATION}($tags: [ExecutionTag!], $partition: String!, $limit: Int!{variables}) {{
  runsOrError(filter: {{tags: $tags}}, limit: $limit) {{
    __typename
    ... on Runs {{
      results {{
        runId
        status
        creationTime
        assetSelection {{
          path
        }}
      }}
    }}
    ... on Error {{
      message
    }}
  }}{fields}
}}
"""


class DagsterLaunchError(Exception):
    """The backfill or run was not launched, or a query not answered; the message says why, fit
    for an API answer."""


class DagsterUnreachable(DagsterLaunchError):
    """No usable answer from the webserver: refused, timed out, HTTP error or not GraphQL."""


class DagsterRejected(DagsterLaunchError):
    """The webserver answered, but with a GraphQL error or an error result instead of what was asked."""


class LaunchedBackfill(BaseModel):
    model_config = ConfigDict(frozen=True)

    backfill_id: str
    launched_run_ids: list[str] = []


class _GraphQLError(BaseModel):
    message: str = "unknown error"


class _LaunchResult(BaseModel):
    typename: str = Field(alias="__typename")
    backfillId: str | None = None
    launchedRunIds: list[str | None] | None = None
    message: str | None = None


class _Answer(BaseModel):
    """Any GraphQL answer: ``data`` is read by the caller for the one field it asked for."""

    data: dict[str, Any] | None = None
    errors: list[_GraphQLError] | None = None


class _Answered(BaseModel):
    """A part of a GraphQL answer: camelCase there, snake_case here."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)


class OrderRun(_Answered):
    """One run of an order, as ``runsOrError`` lists it (newest first)."""

    run_id: str
    # Dagster's RunStatus by name: QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ...
    status: str
    creation_time: float
    # The assets the run was launched for; None or empty for a whole job's run.
    asset_selection: list[AssetPath] | None = None

    @field_validator("asset_selection", mode="before")
    @classmethod
    def _paths(cls, keys: Any) -> Any:
        # [{"path": ["order", "config"]}, ...] -> [("order", "config"), ...]
        if isinstance(keys, list):
            return [tuple(key["path"]) if isinstance(key, dict) else key for key in keys]
        return keys


class LatestMaterialization(_Answered):
    run_id: str
    at: datetime = Field(alias="timestamp")

    @field_validator("at", mode="before")
    @classmethod
    def _from_milliseconds(cls, value: Any) -> Any:
        # GraphQL event timestamps are milliseconds since the epoch, as a string.
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        return value


class OrderRecords(BaseModel):
    model_config = ConfigDict(frozen=True)

    runs: list[OrderRun]
    # Per asset asked for, its newest materialization in the partition (None: never).
    latest: dict[AssetPath, LatestMaterialization | None]


class PythonError(BaseModel):
    """An error of a run's log and the chain of errors it was raised from (an ``ErrorChain``)."""

    model_config = ConfigDict(frozen=True)

    message: str
    cause: PythonError | None = None

    @model_validator(mode="before")
    @classmethod
    def _chained(cls, data: Any) -> Any:
        # GraphQL lists the causes flat (``causes``, outermost first); here they are a chain again.
        if not isinstance(data, dict) or "causes" not in data:
            return data
        cause: dict[str, Any] | None = None
        for link in reversed(data.get("causes") or []):
            cause = {"message": link.get("message", ""), "cause": cause}
        return {"message": data.get("message", ""), "cause": cause}


class _FailureMetadata(BaseModel):
    description: str | None = None


class StepFailure(_Answered):
    step_key: str | None = None
    message: str = ""
    error: PythonError | None = None
    # A ``Failure`` raised by the step's code says why in its description.
    failure_metadata: _FailureMetadata | None = None

    @property
    def description(self) -> str | None:
        return self.failure_metadata.description if self.failure_metadata is not None else None


class RunFailure(_Answered):
    message: str = ""
    error: PythonError | None = None


class RunLog(BaseModel):
    """What a run logged that decides its assets' status, in the order it was logged."""

    model_config = ConfigDict(frozen=True)

    step_failures: list[StepFailure] = []
    run_failures: list[RunFailure] = []
    # The assets the run planned to materialize when it was created.
    planned: frozenset[AssetPath] = frozenset()


def _run_log(events: Sequence[dict[str, Any]]) -> RunLog:
    step_failures: list[StepFailure] = []
    run_failures: list[RunFailure] = []
    planned: set[AssetPath] = set()
    for event in events:
        kind = event.get("__typename")
        if kind == "ExecutionStepFailureEvent":
            step_failures.append(StepFailure.model_validate(event))
        elif kind == "RunFailureEvent":
            run_failures.append(RunFailure.model_validate(event))
        elif kind == "AssetMaterializationPlannedEvent" and event.get("assetKey"):
            planned.add(tuple(event["assetKey"]["path"]))
    return RunLog(step_failures=step_failures, run_failures=run_failures, planned=frozenset(planned))


class RepositorySelector(BaseModel):
    model_config = ConfigDict(frozen=True)

    repositoryLocationName: str
    repositoryName: str


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _field(data: Mapping[str, Any], field: str) -> dict[str, Any]:
    result = data.get(field)
    if not isinstance(result, dict):
        raise DagsterRejected(f"Dagster answered without a {field} result")
    return result


class DagsterGraphQL:
    """Client of one Dagster webserver's GraphQL endpoint, e.g. ``http://127.0.0.1:3000/graphql``."""

    def __init__(
        self,
        graphql_url: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
    ) -> None:
        self.graphql_url = graphql_url
        self._timeout = (connect_timeout, read_timeout)
        # Without a session, one connection per launch: requests' sessions are not thread-safe, and
        # launches are rare.
        self._session = session
        self._selector: RepositorySelector | None = None

    def launch(
        self,
        partition_names: Sequence[str],
        asset_keys: Sequence[Sequence[str]],
        *,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> LaunchedBackfill:
        """Launch one asset backfill of ``asset_keys`` (each a key path) over ``partition_names``."""
        if not partition_names or not asset_keys:
            raise ValueError("a backfill needs at least one partition and one asset")
        params: dict[str, Any] = {
            "partitionNames": list(partition_names),
            "assetSelection": [{"path": list(path)} for path in asset_keys],
            "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
        }
        if description is not None:
            params["description"] = description
        body = {"query": LAUNCH_PARTITION_BACKFILL, "variables": {"backfillParams": params}}
        result = _LaunchResult.model_validate(self._result(body, "launchPartitionBackfill", "the backfill"))
        if result.typename != "LaunchBackfillSuccess" or not result.backfillId:
            reason = _short(result.message or "no message")
            raise DagsterRejected(f"Dagster did not launch the backfill ({result.typename}): {reason}")
        return LaunchedBackfill(
            backfill_id=result.backfillId,
            launched_run_ids=[run_id for run_id in result.launchedRunIds or [] if run_id],
        )

    def launch_partition_run(
        self,
        partition_key: str,
        partitions_def: str,
        asset_keys: Sequence[Sequence[str]],
        *,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Add ``partition_key`` to the dynamic partitions ``partitions_def`` (if new) and queue one
        run of ``asset_keys`` for it; the run's id."""
        if not asset_keys:
            raise ValueError("a run needs at least one asset")
        selector = self._repository_selector()
        added = self._result(
            {
                "query": ADD_DYNAMIC_PARTITION,
                "variables": {
                    "selector": selector.model_dump(),
                    "name": partitions_def,
                    "key": partition_key,
                },
            },
            "addDynamicPartition",
            f"partition {partition_key}",
        )
        # Already there (a relaunch) is as good as added.
        if added.get("__typename") not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise DagsterRejected(
                f"Dagster did not add partition {partition_key} ({added.get('__typename')}): {_short(str(added.get('message')))}"
            )
        params = {
            "selector": {
                **selector.model_dump(),
                "jobName": ASSET_JOB,
                "assetSelection": [{"path": list(path)} for path in asset_keys],
            },
            "runConfigData": {},
            "executionMetadata": {
                "tags": [
                    {"key": key, "value": value}
                    for key, value in {**(tags or {}), PARTITION_TAG: partition_key}.items()
                ]
            },
        }
        launched = self._result(
            {"query": LAUNCH_RUN, "variables": {"executionParams": params}}, "launchRun", "the run"
        )
        run = launched.get("run") or {}
        if launched.get("__typename") != "LaunchRunSuccess" or not run.get("runId"):
            raise DagsterRejected(
                f"Dagster did not launch the run ({launched.get('__typename')}): {_short(str(launched.get('message')))}"
            )
        return str(run["runId"])

    def order_records(
        self, partition_key: str, asset_paths: Sequence[AssetPath], *, recent_runs: int
    ) -> OrderRecords:
        """The ``recent_runs`` newest runs of the partition, and each asset's newest
        materialization in it."""
        variables: dict[str, Any] = {
            "tags": [{"key": PARTITION_TAG, "value": partition_key}],
            "partition": partition_key,
            "limit": recent_runs,
            **{f"asset{index}": list(path) for index, path in enumerate(asset_paths)},
        }
        body = {
            "query": order_records_query(len(asset_paths)),
            "operationName": ORDER_RECORDS_OPERATION,
            "variables": variables,
        }
        data = self._data(body, f"the run query of partition {partition_key}")
        runs = _field(data, "runsOrError")
        if runs.get("__typename") != "Runs":
            raise DagsterRejected(
                f"Dagster did not list the runs ({runs.get('__typename')}): {_short(str(runs.get('message')))}"
            )
        latest: dict[AssetPath, LatestMaterialization | None] = {}
        for index, path in enumerate(asset_paths):
            found = _field(data, f"asset{index}").get("assetMaterializations") or []
            latest[tuple(path)] = LatestMaterialization.model_validate(found[0]) if found else None
        return OrderRecords(
            runs=[OrderRun.model_validate(run) for run in runs.get("results") or []], latest=latest
        )

    def run_log(self, run_id: str) -> RunLog:
        """The run's step and run failures and planned assets, read page by page."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(RUN_LOG_MAX_PAGES):
            body = {
                "query": RUN_LOG,
                "operationName": RUN_LOG_OPERATION,
                "variables": {"runId": run_id, "cursor": cursor, "limit": RUN_LOG_PAGE},
            }
            run = self._result(body, "runOrError", f"the log of run {run_id}")
            if run.get("__typename") != "Run":
                raise DagsterRejected(
                    f"Dagster did not read run {run_id} ({run.get('__typename')}): {_short(str(run.get('message')))}"
                )
            page = run.get("eventConnection") or {}
            events.extend(page.get("events") or [])
            cursor = page.get("cursor")
            if not page.get("hasMore"):
                break
        return _run_log(events)

    def _repository_selector(self) -> RepositorySelector:
        # One code location serves the platform; asked once, as the location does not move.
        if self._selector is None:
            answer = self._result({"query": REPOSITORIES}, "repositoriesOrError", "the repository query")
            nodes = answer.get("nodes") or []
            found = [
                node for node in nodes if ASSET_JOB in {job.get("name") for job in node.get("jobs") or []}
            ]
            if not found:
                raise DagsterRejected("Dagster has no code location with assets loaded")
            self._selector = RepositorySelector(
                repositoryLocationName=found[0]["location"]["name"], repositoryName=found[0]["name"]
            )
        return self._selector

    def _result(self, body: dict[str, Any], field: str, what: str) -> dict[str, Any]:
        """The ``field`` of the answer's data; GraphQL errors and a missing result are rejections of ``what``."""
        return _field(self._data(body, what), field)

    def _data(self, body: dict[str, Any], what: str) -> dict[str, Any]:
        """The answer's data; GraphQL errors are a rejection of ``what``."""
        answer = self._post(body)
        if answer.errors:
            raise DagsterRejected(
                f"Dagster rejected {what}: " + _short("; ".join(e.message for e in answer.errors))
            )
        return answer.data or {}

    def _post(self, body: dict[str, Any]) -> _Answer:
        where = f"the Dagster webserver at {self.graphql_url}"
        try:
            post = self._session.post if self._session is not None else requests.post
            response = post(self.graphql_url, json=body, timeout=self._timeout)
        except requests.Timeout:
            connect, read = self._timeout
            raise DagsterUnreachable(
                f"{where} did not answer in time (connect {connect:g} s, read {read:g} s)"
            ) from None
        except requests.RequestException as exc:
            raise DagsterUnreachable(f"{where} is unreachable ({type(exc).__name__})") from None
        # GraphQL errors come in the body, with 200, 400 or 500; a body without a GraphQL result
        # (a proxy's error page, a server starting up) is no answer at all.
        try:
            answer = _Answer.model_validate(response.json())
        except (ValueError, ValidationError):
            answer = None
        if answer is None or (answer.data is None and not answer.errors):
            raise DagsterUnreachable(f"{where} answered HTTP {response.status_code} without a GraphQL result")
        return answer
