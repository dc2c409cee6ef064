"""Launching Dagster backfills through the webserver's GraphQL API (``launchPartitionBackfill``).

Plain HTTP (requests) and pydantic, no Dagster import: the API process talks to the webserver the
way the UI does. Every failure becomes a :class:`BackfillError` whose message is safe to show a
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


class BackfillError(Exception):
    """The backfill was not launched; the message says why, fit for an API answer."""


class DagsterUnreachable(BackfillError):
    """No usable answer from the webserver: refused, timed out, HTTP error or not GraphQL."""


class BackfillRejected(BackfillError):
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


class _LaunchData(BaseModel):
    launchPartitionBackfill: _LaunchResult | None = None


class _LaunchAnswer(BaseModel):
    data: _LaunchData | None = None
    errors: list[_GraphQLError] | None = None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


class DagsterBackfills:
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
        answer = self._post({"query": LAUNCH_PARTITION_BACKFILL, "variables": {"backfillParams": params}})
        if answer.errors:
            raise BackfillRejected("Dagster rejected the backfill: " + _short("; ".join(e.message for e in answer.errors)))
        result = answer.data.launchPartitionBackfill if answer.data is not None else None
        if result is None:
            raise BackfillRejected("Dagster answered without a launchPartitionBackfill result")
        if result.typename != "LaunchBackfillSuccess" or not result.backfillId:
            reason = _short(result.message or "no message")
            raise BackfillRejected(f"Dagster did not launch the backfill ({result.typename}): {reason}")
        return LaunchedBackfill(
            backfill_id=result.backfillId, launched_run_ids=[run_id for run_id in result.launchedRunIds or [] if run_id]
        )

    def _post(self, body: dict[str, Any]) -> _LaunchAnswer:
        where = f"the Dagster webserver at {self.graphql_url}"
        try:
            post = self._session.post if self._session is not None else requests.post
            response = post(self.graphql_url, json=body, timeout=self._timeout)
        except requests.Timeout:
            connect, read = self._timeout
            raise DagsterUnreachable(f"{where} did not answer in time (connect {connect:g} s, read {read:g} s)") from None
        except requests.RequestException as exc:
            raise DagsterUnreachable(f"{where} is unreachable ({type(exc).__name__})") from None
        # GraphQL errors come in the body, with 200, 400 or 500; a body without a GraphQL result
        # (a proxy's error page, a server starting up) is no answer at all.
        try:
            answer = _LaunchAnswer.model_validate(response.json())
        except (ValueError, ValidationError):
            answer = None
        if answer is None or (answer.data is None and not answer.errors):
            raise DagsterUnreachable(f"{where} answered HTTP {response.status_code} without a GraphQL result")
        return answer
