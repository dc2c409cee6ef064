"""Launching Dagster backfills and runs through the webserver's GraphQL API.

``launchPartitionBackfill`` for re-deliveries and retries (the backfill daemon submits their runs);
``addDynamicPartition`` + ``launchRun`` for an order's first run, which goes to the run queue at once.

Plain HTTP (requests) and pydantic, no Dagster import: the API process talks to the webserver the
way the UI does. Every failure becomes a :class:`DagsterLaunchError` whose message is safe to show a
client: no stack trace, no response body beyond Dagster's own error message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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

# Dagster's implicit job over all assets: a run of any asset selection is a run of it.
ASSET_JOB = "__ASSET_JOB"


class DagsterLaunchError(Exception):
    """The backfill or run was not launched; the message says why, fit for an API answer."""


class DagsterUnreachable(DagsterLaunchError):
    """No usable answer from the webserver: refused, timed out, HTTP error or not GraphQL."""


class DagsterRejected(DagsterLaunchError):
    """The webserver answered, but with a GraphQL error or an error result instead of a backfill."""


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


class RepositorySelector(BaseModel):
    model_config = ConfigDict(frozen=True)

    repositoryLocationName: str
    repositoryName: str


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


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
                    for key, value in {**(tags or {}), "dagster/partition": partition_key}.items()
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
        answer = self._post(body)
        if answer.errors:
            raise DagsterRejected(
                f"Dagster rejected {what}: " + _short("; ".join(e.message for e in answer.errors))
            )
        result = (answer.data or {}).get(field)
        if not isinstance(result, dict):
            raise DagsterRejected(f"Dagster answered without a {field} result")
        return result

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
